-- Up Migration

-- The workflow that holds an instance's claim, beside the request it holds it for: a workflow
-- may take over an existing claim only when both are its own, so passing another request's id
-- no longer lets a second workflow act on a claimed instance. Null for a claim made outside
-- Temporal with no workflow named (and for claims made before this migration, which no workflow
-- can take over: let in-flight actions finish before migrating).
ALTER TABLE instances ADD COLUMN task_workflow_id text;

-- The workflow that runs each action, so that the API can show its progress.
ALTER TABLE instance_actions ADD COLUMN workflow_id text;

-- Down Migration

ALTER TABLE instance_actions DROP COLUMN workflow_id;
ALTER TABLE instances DROP COLUMN task_workflow_id;

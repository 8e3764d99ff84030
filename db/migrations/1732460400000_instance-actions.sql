-- Up Migration

-- What was done to an instance, by whom, and how each step went: Nova's instance actions and
-- events (os-instance-actions), one action per request.
CREATE TABLE instance_actions (
  id bigserial PRIMARY KEY,
  instance_uuid uuid NOT NULL REFERENCES instances (uuid) ON DELETE CASCADE,
  action text NOT NULL,
  request_id text NOT NULL UNIQUE,
  user_id text NOT NULL,
  project_id text NOT NULL,
  start_time timestamptz NOT NULL DEFAULT now(),
  finish_time timestamptz,
  -- 'Error' when the action failed, as Nova; null while running or after success.
  message text
);
CREATE INDEX instance_actions_instance ON instance_actions (instance_uuid, start_time);

CREATE TABLE instance_action_events (
  id bigserial PRIMARY KEY,
  action_id bigint NOT NULL REFERENCES instance_actions (id) ON DELETE CASCADE,
  event text NOT NULL,
  host text,
  start_time timestamptz NOT NULL DEFAULT now(),
  finish_time timestamptz,
  -- 'Success' or 'Error'; null while the step runs.
  result text,
  traceback text,
  UNIQUE (action_id, event)
);

-- Down Migration

DROP TABLE instance_action_events;
DROP TABLE instance_actions;

-- Up Migration

-- Why an action that did not succeed ended as it did, where no step says: who cancelled it
-- ('cancelled by <identity>'), or that the reconciler released its claim and why. Nova's message
-- stays 'Error' (or 'Cancelled') beside it.
ALTER TABLE instance_actions ADD COLUMN reason text;

-- Down Migration

ALTER TABLE instance_actions DROP COLUMN reason;

-- Up Migration

-- A deleted instance is kept, as Nova soft-deletes it, so that its actions log stays readable;
-- every lookup of live instances skips it.
ALTER TABLE instances ADD COLUMN deleted_at timestamptz;

-- Down Migration

ALTER TABLE instances DROP COLUMN deleted_at;

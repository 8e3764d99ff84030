-- Up Migration

-- Nova's os-services for compute hosts: an admin disables a host (with a reason) so that the
-- scheduler sends it nothing new, or forces it down so that it counts as down at once (its
-- servers can then be deleted locally) instead of after the service-down window. The id is the
-- service's uuid, as Nova shows it from microversion 2.53.
ALTER TABLE compute_nodes
  ADD COLUMN service_id uuid NOT NULL UNIQUE DEFAULT gen_random_uuid(),
  ADD COLUMN disabled boolean NOT NULL DEFAULT false,
  ADD COLUMN disabled_reason text,
  ADD COLUMN forced_down boolean NOT NULL DEFAULT false;

-- A port's MAC address is unique among the ports of live instances only: a deleted server's
-- ports no longer hold theirs.
ALTER TABLE ports DROP CONSTRAINT ports_mac_address_key;
ALTER TABLE ports ADD COLUMN deleted boolean NOT NULL DEFAULT false;
CREATE UNIQUE INDEX ports_live_mac_address ON ports (mac_address) WHERE NOT deleted;

-- Down Migration

DROP INDEX ports_live_mac_address;
ALTER TABLE ports DROP COLUMN deleted;
ALTER TABLE ports ADD CONSTRAINT ports_mac_address_key UNIQUE (mac_address);
ALTER TABLE compute_nodes
  DROP COLUMN service_id,
  DROP COLUMN disabled,
  DROP COLUMN disabled_reason,
  DROP COLUMN forced_down;

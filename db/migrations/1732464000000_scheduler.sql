-- Up Migration

-- Capacity each compute host reports, with its overcommit ratios (Nova's allocation ratios).
ALTER TABLE compute_nodes
  ADD COLUMN local_gb integer NOT NULL DEFAULT 0,
  ADD COLUMN cpu_allocation_ratio real NOT NULL DEFAULT 4.0,
  ADD COLUMN ram_allocation_ratio real NOT NULL DEFAULT 1.0,
  ADD COLUMN disk_allocation_ratio real NOT NULL DEFAULT 1.0;

-- The availability zone an instance is pinned to (Nova's RequestSpec.availability_zone), as
-- opposed to availability_zone, the zone of the host it is on now.
ALTER TABLE instances ADD COLUMN requested_availability_zone text;

-- Down Migration

ALTER TABLE instances DROP COLUMN requested_availability_zone;
ALTER TABLE compute_nodes
  DROP COLUMN local_gb,
  DROP COLUMN cpu_allocation_ratio,
  DROP COLUMN ram_allocation_ratio,
  DROP COLUMN disk_allocation_ratio;

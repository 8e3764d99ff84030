-- Up Migration

-- A network per project (Neutron's network with its one IPv4 subnet, in short), made on the
-- project's first build. Each takes its own /24 of 10.128.0.0/9, drawn from a sequence so that
-- two projects never share one: the n-th network is 10.(128 + n / 256).(n % 256).0/24, its
-- gateway the first address. The host side (lib/host-network.ts) is a libvirt network per
-- network, on a bridge of its own.
CREATE SEQUENCE network_subnets MINVALUE 0 MAXVALUE 32767 START 0;
CREATE TABLE networks (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  project_id text NOT NULL,
  name text NOT NULL,
  cidr cidr NOT NULL UNIQUE,
  gateway inet NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (project_id, name)
);

-- A port's fixed IP on its network, kept through shelve-offload and unshelve as its MAC address
-- is, and unique among live ports. Ports recorded before this migration have none.
ALTER TABLE ports
  ADD COLUMN network_id uuid REFERENCES networks (id),
  ADD COLUMN fixed_ip inet,
  ADD CONSTRAINT ports_fixed_ip_with_network CHECK ((network_id IS NULL) = (fixed_ip IS NULL));
CREATE UNIQUE INDEX ports_live_fixed_ip ON ports (network_id, fixed_ip) WHERE NOT deleted;

-- Down Migration

DROP INDEX ports_live_fixed_ip;
ALTER TABLE ports DROP COLUMN network_id, DROP COLUMN fixed_ip;
DROP TABLE networks;
DROP SEQUENCE network_subnets;

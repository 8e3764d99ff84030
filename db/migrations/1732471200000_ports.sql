-- Up Migration

-- An instance's network ports (Nova's network info, Neutron's ports in short). As in Nova they
-- survive shelve-offload, MAC address included, and are bound to the instance's new host at
-- unshelve; binding_host keeps naming the old host while the instance is offloaded.
CREATE TABLE ports (
  id uuid PRIMARY KEY,
  instance_uuid uuid NOT NULL REFERENCES instances (uuid) ON DELETE CASCADE,
  network text NOT NULL,
  mac_address text NOT NULL UNIQUE,
  binding_host text,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ports_instance ON ports (instance_uuid);

-- Down Migration

DROP TABLE ports;

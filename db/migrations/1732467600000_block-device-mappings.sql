-- Up Migration

-- How an instance's disks are backed (Nova's block_device_mapping). A root mapping with
-- destination_type 'volume' makes the instance volume-backed: its root disk is a volume in a
-- libvirt storage pool that outlives the domain, kept through shelve-offload and re-attached at
-- unshelve (there is no Cinder here).
CREATE TABLE block_device_mappings (
  id bigserial PRIMARY KEY,
  instance_uuid uuid NOT NULL REFERENCES instances (uuid) ON DELETE CASCADE,
  boot_index integer,
  source_type text NOT NULL CHECK (source_type IN ('image', 'volume', 'blank')),
  destination_type text NOT NULL CHECK (destination_type IN ('local', 'volume')),
  image_id text,
  volume_id text,
  volume_size_gb integer,
  device_name text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (instance_uuid, device_name)
);

-- Down Migration

DROP TABLE block_device_mappings;

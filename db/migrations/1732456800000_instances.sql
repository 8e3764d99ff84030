-- Up Migration

-- An instance as Nova records it (spec §1, §2.2); the flavor is stored inline.
CREATE TABLE instances (
  uuid uuid PRIMARY KEY,
  display_name text NOT NULL,
  project_id text NOT NULL,
  user_id text NOT NULL,
  host text,
  node text,
  availability_zone text,
  vm_state text NOT NULL,
  task_state text,
  -- The request (one workflow run) that holds task_state: lets that run's retried steps pass the
  -- compare-and-swap while every other request is refused.
  task_request_id text,
  power_state smallint NOT NULL DEFAULT 0,
  image_ref text NOT NULL DEFAULT '',
  flavorid text NOT NULL,
  flavor_name text NOT NULL,
  vcpus integer NOT NULL CHECK (vcpus > 0),
  memory_mb integer NOT NULL CHECK (memory_mb > 0),
  root_gb integer NOT NULL CHECK (root_gb >= 0),
  ephemeral_gb integer NOT NULL DEFAULT 0 CHECK (ephemeral_gb >= 0),
  swap integer NOT NULL DEFAULT 0 CHECK (swap >= 0),
  launched_at timestamptz,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX instances_host ON instances (host);

CREATE TABLE instance_system_metadata (
  instance_uuid uuid NOT NULL REFERENCES instances (uuid) ON DELETE CASCADE,
  key text NOT NULL,
  value text NOT NULL,
  PRIMARY KEY (instance_uuid, key)
);

-- Hypervisor hosts, registered by their compute workers, which report every few seconds.
CREATE TABLE compute_nodes (
  host text PRIMARY KEY,
  availability_zone text NOT NULL,
  hypervisor_type text NOT NULL,
  vcpus integer NOT NULL,
  memory_mb integer NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now()
);

-- Down Migration

DROP TABLE compute_nodes;
DROP TABLE instance_system_metadata;
DROP TABLE instances;

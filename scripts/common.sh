# Settings shared by the project's scripts; sourced, never run.
# Every value can be overridden from the environment.

REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STACK_DIR=${STACK_DIR:-$REPO_DIR/.stack}
CACHE_DIR=${VM_SHELVE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vm-shelve}

TEMPORAL_CLI_VERSION=1.5.1
# The cluster profile's Temporal Server and Web UI server (scripts/temporal-cluster.sh).
TEMPORAL_SERVER_VERSION=1.29.1
TEMPORAL_UI_SERVER_VERSION=2.42.1
# Which Temporal scripts/stack runs: dev (the CLI's dev server) or cluster.
STACK_TEMPORAL=${STACK_TEMPORAL:-dev}
TEMPORAL_PORT=${TEMPORAL_PORT:-7233}
TEMPORAL_UI_PORT=${TEMPORAL_UI_PORT:-8233}
GLANCE_PORT=${GLANCE_PORT:-9292}
KEYSTONE_PORT=${KEYSTONE_PORT:-5000}
PRIVATE_PG_PORT=${PRIVATE_PG_PORT:-5433}
DATABASE_NAME=${DATABASE_NAME:-vm_shelve}

# Custom search attributes the workflows upsert (lib/temporal.ts defines them).
SEARCH_ATTRIBUTES=(InstanceUuid=Keyword ComputeHost=Keyword InstanceAction=Keyword)

DEBIAN_PACKAGES=(
  libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients libvirt-dev
  qemu-system-x86 qemu-utils glance-api postgresql-client python3-openstackclient
  python3-keystone uwsgi-plugin-python3
  chromium
  build-essential python3 curl acl
  fdisk dosfstools mtools syslinux cpio xz-utils ovmf
  dnsmasq-base dnsmasq-utils iptables
  haproxy
)

log() { printf '\033[1m[%s]\033[0m %s\n' "${LOG_TAG:-vm-shelve}" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Path of the temporal binary: from PATH, else the one built into the cache.
temporal_bin() {
  if command -v temporal >/dev/null 2>&1; then
    command -v temporal
  else
    echo "$CACHE_DIR/temporal-cli-$TEMPORAL_CLI_VERSION/temporal"
  fi
}

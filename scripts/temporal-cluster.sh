# The stack's production-shaped Temporal (STACK_TEMPORAL=cluster): Temporal Server itself, not
# the dev server. Its services run as separate processes (two frontends, two history, one
# matching, one worker) with persistence and visibility in PostgreSQL, schemas applied by
# Temporal's own SQL tool. Clients reach the frontends through HAProxy on $TEMPORAL_PORT, as
# they would through a production load balancer, so that a frontend can die under them; the
# Web UI server talks to the same address. Sourced by scripts/stack, never run.
#
# Every process has its own pid file, temporal-<service>-<n>.pid, and log, so that a test can
# kill one of them.

TEMPORAL_CLUSTER_DIR=$STACK_DIR/temporal-cluster
# How many history processes share the shards: 2, or 1 to compare (the benchmark's scale part).
TEMPORAL_HISTORY_PROCESSES=${TEMPORAL_HISTORY_PROCESSES:-2}
# name grpc-port membership-port: one line a process. The frontends' HTTP ports are grpc + 10.
[ "$TEMPORAL_HISTORY_PROCESSES" = 2 ] || [ "$TEMPORAL_HISTORY_PROCESSES" = 1 ] ||
  die "TEMPORAL_HISTORY_PROCESSES must be 1 or 2, not '$TEMPORAL_HISTORY_PROCESSES'"
TEMPORAL_CLUSTER_PROCESSES=("frontend-1 7240 6940" "frontend-2 7241 6941" "history-1 7242 6942")
[ "$TEMPORAL_HISTORY_PROCESSES" = 1 ] || TEMPORAL_CLUSTER_PROCESSES+=("history-2 7243 6943")
TEMPORAL_CLUSTER_PROCESSES+=("matching-1 7244 6944" "worker-1 7245 6945")

temporal_server_bin() { echo "$CACHE_DIR/temporal-server-$TEMPORAL_SERVER_VERSION/temporal-server"; }
temporal_sql_tool_bin() { echo "$CACHE_DIR/temporal-server-$TEMPORAL_SERVER_VERSION/temporal-sql-tool"; }
temporal_schema_dir() { echo "$CACHE_DIR/temporal-server-$TEMPORAL_SERVER_VERSION/schema"; }
temporal_ui_server_bin() { echo "$CACHE_DIR/temporal-ui-server-$TEMPORAL_UI_SERVER_VERSION/temporal-ui-server"; }

# The pid-file names of the cluster's processes, HAProxy and the UI server included: every one
# that may run, whatever TEMPORAL_HISTORY_PROCESSES says now.
temporal_cluster_pid_names() {
  echo temporal-frontend-1 temporal-frontend-2 temporal-history-1 temporal-history-2 \
    temporal-matching-1 temporal-worker-1 temporal-haproxy temporal-ui
}

# temporal_sql DATABASE ARGS...: Temporal's SQL tool against $1 on the stack's PostgreSQL.
temporal_sql() {
  local database=$1 server=${DATABASE_URL%/*}
  shift
  local address=${server##*@}
  "$(temporal_sql_tool_bin)" --plugin postgres12 --endpoint "${address%:*}" --port "${address##*:}" \
    --user postgres --database "$database" "$@"
}

# Creates the two databases on first start and brings their schemas to this server's version
# (update-schema applies only the versions a database lacks).
temporal_cluster_schemas() {
  local server=${DATABASE_URL%/*} database schema
  for database in temporal temporal_visibility; do
    schema=temporal
    [ "$database" = temporal_visibility ] && schema=visibility
    if [ "$(psql "$server/postgres" -XtAc "SELECT 1 FROM pg_database WHERE datname = '$database'")" != 1 ]; then
      log "creating Temporal's database $database"
      temporal_sql "$database" create-database >>"$LOG_DIR/temporal-sql-tool.log" 2>&1
      temporal_sql "$database" setup-schema --version 0.0 >>"$LOG_DIR/temporal-sql-tool.log" 2>&1
    fi
    temporal_sql "$database" update-schema --schema-dir "$(temporal_schema_dir)/$schema/versioned" \
      >>"$LOG_DIR/temporal-sql-tool.log" 2>&1 || die "Temporal's schema update of $database failed; see $LOG_DIR/temporal-sql-tool.log"
  done
}

# temporal_cluster_service_config SERVICE GRPC MEMBERSHIP: a services: section for one process.
temporal_cluster_service_config() {
  echo "services:"
  echo "  $1:"
  echo "    rpc:"
  echo "      grpcPort: $2"
  echo "      membershipPort: $3"
  echo "      bindOnIP: 127.0.0.1"
  [ "$1" = frontend ] && echo "      httpPort: $(($2 + 10))"
  return 0
}

# temporal_cluster_persistence MAX-CONNS MAX-IDLE: the persistence section, with a process's share
# of PostgreSQL's connections (100 by default, which vm-shelve's processes use too): history
# processes do most of the work, the others little; visibility gets 2 each.
temporal_cluster_persistence() {
  local address=${DATABASE_URL%/*} store database max=$1 idle=$2
  address=${address##*@}
  # One history shard count for the cluster's life: Temporal refuses to start on another.
  cat <<EOF
persistence:
  defaultStore: default
  visibilityStore: visibility
  numHistoryShards: 8
  datastores:
EOF
  for store in default visibility; do
    database=temporal
    if [ "$store" = visibility ]; then database=temporal_visibility max=2 idle=1; fi
    cat <<EOF
    $store:
      sql:
        pluginName: postgres12
        databaseName: $database
        connectAddr: "$address"
        connectProtocol: tcp
        user: postgres
        maxConns: $max
        maxIdleConns: $idle
        maxConnLifetime: 1h
EOF
  done
}

temporal_cluster_config() {
  local dir=$TEMPORAL_CLUSTER_DIR/config
  mkdir -p "$dir"
  {
    echo "log:"
    echo "  stdout: true"
    echo "  level: warn"
    temporal_cluster_persistence 4 2
  } >"$dir/base.yaml"
  cat >>"$dir/base.yaml" <<EOF
global:
  membership:
    maxJoinDuration: 30s
    broadcastAddress: 127.0.0.1
clusterMetadata:
  enableGlobalNamespace: false
  failoverVersionIncrement: 10
  masterClusterName: active
  currentClusterName: active
  clusterInformation:
    active:
      enabled: true
      initialFailoverVersion: 1
      rpcName: frontend
      rpcAddress: 127.0.0.1:$TEMPORAL_PORT
dcRedirectionPolicy:
  policy: noop
dynamicConfigClient:
  filepath: $dir/dynamicconfig.yaml
  pollInterval: 10s
EOF
  # A search attribute is usable the moment it is registered, as on the dev server.
  cat >"$dir/dynamicconfig.yaml" <<EOF
system.forceSearchAttributesCacheRefreshOnRead:
  - value: true
EOF
  # Every process must know every service (its membership monitor tracks them all): base.yaml
  # lists each service at its first process's ports, a process's own file its own.
  local process name grpc membership service
  echo "services:" >>"$dir/base.yaml"
  for process in "${TEMPORAL_CLUSTER_PROCESSES[@]}"; do
    read -r name grpc membership <<<"$process"
    service=${name%-*}
    temporal_cluster_service_config "$service" "$grpc" "$membership" >"$dir/$name.yaml"
    [ "$service" = history ] && temporal_cluster_persistence 12 6 >>"$dir/$name.yaml"
    [ "${name##*-}" = 1 ] && temporal_cluster_service_config "$service" "$grpc" "$membership" | tail -n +2 >>"$dir/base.yaml"
  done
  cat >"$TEMPORAL_CLUSTER_DIR/haproxy.cfg" <<EOF
defaults
  mode tcp
  timeout connect 2s
  # Long polls last about a minute; a workflow's result is awaited for as long as it runs.
  timeout client 1h
  timeout server 1h
  retries 3
  option redispatch
frontend temporal
  bind 127.0.0.1:$TEMPORAL_PORT
  default_backend frontends
backend frontends
  balance leastconn
EOF
  for process in "${TEMPORAL_CLUSTER_PROCESSES[@]}"; do
    read -r name grpc membership <<<"$process"
    [ "${name%-*}" = frontend ] && echo "  server $name 127.0.0.1:$grpc check inter 1s fall 1 rise 2" >>"$TEMPORAL_CLUSTER_DIR/haproxy.cfg"
  done
  mkdir -p "$TEMPORAL_CLUSTER_DIR/ui/config"
  cat >"$TEMPORAL_CLUSTER_DIR/ui/config/development.yaml" <<EOF
temporalGrpcAddress: 127.0.0.1:$TEMPORAL_PORT
host: 127.0.0.1
port: $TEMPORAL_UI_PORT
enableUi: true
defaultNamespace: ${TEMPORAL_NAMESPACE:-default}
notifyOnNewVersion: false
EOF
}

temporal_cluster_up() {
  local server ui
  server=$(temporal_server_bin)
  ui=$(temporal_ui_server_bin)
  [ -x "$server" ] && [ -x "$ui" ] || die "no Temporal Server at $server or UI server at $ui; run STACK_TEMPORAL=cluster scripts/setup"
  command -v haproxy >/dev/null || die "no haproxy; run STACK_TEMPORAL=cluster scripts/setup"
  temporal_cluster_schemas
  temporal_cluster_config
  [ "$TEMPORAL_HISTORY_PROCESSES" = 2 ] || stop_pidfile temporal-history-2
  local process name
  for process in "${TEMPORAL_CLUSTER_PROCESSES[@]}"; do
    name=${process%% *}
    pid_alive "temporal-$name" && continue
    log "starting Temporal $name"
    start_daemon "temporal-$name" "$server" --root "$TEMPORAL_CLUSTER_DIR" --config config --env "$name" \
      --allow-no-auth start --service "${name%-*}"
  done
  if ! pid_alive temporal-haproxy; then
    log "starting HAProxy on 127.0.0.1:$TEMPORAL_PORT in front of the frontends"
    start_daemon temporal-haproxy haproxy -db -f "$TEMPORAL_CLUSTER_DIR/haproxy.cfg"
  fi
  if ! pid_alive temporal-ui; then
    log "starting the Temporal Web UI server on http://127.0.0.1:$TEMPORAL_UI_PORT"
    start_daemon temporal-ui "$ui" --root "$TEMPORAL_CLUSTER_DIR/ui" --config config --env development start
  fi
}

# The namespace, on first start: the dev server makes it by itself. Every frontend must know it
# before the stack is up, or the first worker's polls fail on the one that does not yet.
temporal_cluster_namespace() {
  local temporal=$1 namespace=${TEMPORAL_NAMESPACE:-default}
  if ! "$temporal" operator namespace describe --address "$TEMPORAL_ADDRESS" --namespace "$namespace" >/dev/null 2>&1; then
    log "registering namespace $namespace"
    "$temporal" operator namespace create --address "$TEMPORAL_ADDRESS" --namespace "$namespace" --retention 72h >/dev/null
  fi
  local process name grpc membership
  for process in "${TEMPORAL_CLUSTER_PROCESSES[@]}"; do
    read -r name grpc membership <<<"$process"
    [ "${name%-*}" = frontend ] || continue
    wait_for "namespace $namespace on $name" 60 \
      "$temporal" workflow count --address "127.0.0.1:$grpc" --namespace "$namespace"
  done
}

temporal_cluster_down() {
  local name
  for name in $(temporal_cluster_pid_names); do stop_pidfile "$name"; done
}

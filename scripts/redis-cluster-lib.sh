# shellcheck shell=bash
# Sourced by scripts/redis-cluster-sizing and scripts/bench-redis: starts a private 6-node Redis
# Cluster (3 masters, 3 replicas) on free loopback ports, no persistence. Needs `free_port`,
# `log` and the array PIDS (every started process is appended to it; the caller stops them).
# After `start_cluster DIR`, CLUSTER_PORTS holds the six client ports and CLUSTER_URLS_TOML the
# TOML list of their URLs.
# Starts node $2 under $1 on fresh free ports, retried on new ports (5 times) when it does not
# come up (a port taken in between); appends its client port to CLUSTER_PORTS.
spawn_node() {
  local dir=$1 i=$2 port bus pid try
  mkdir -p "$dir/node-$i"
  for try in 1 2 3 4 5; do
    port=$(free_port); bus=$(free_port)
    [ "$port" != "$bus" ] || continue
    redis-server --port "$port" --cluster-port "$bus" --cluster-enabled yes \
      --cluster-config-file nodes.conf --cluster-node-timeout 5000 --bind 127.0.0.1 \
      --save '' --appendonly no --repl-diskless-sync-delay 0 --dir "$dir/node-$i" \
      --daemonize no >"$dir/node-$i.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 50); do
      if redis-cli -p "$port" PING 2>/dev/null | grep -q PONG; then
        PIDS+=("$pid"); CLUSTER_PORTS+=("$port"); return 0
      fi
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
    rm -f "$dir/node-$i/nodes.conf"
  done
  log "redis node $i did not start: $(tail -n 3 "$dir/node-$i.log")"; exit 1
}

start_cluster() {
  local dir=$1 i port
  CLUSTER_PORTS=()
  for i in 0 1 2 3 4 5; do spawn_node "$dir" "$i"; done
  local hosts=()
  for port in "${CLUSTER_PORTS[@]}"; do hosts+=("127.0.0.1:$port"); done
  redis-cli --cluster create "${hosts[@]}" --cluster-replicas 1 --cluster-yes >"$dir/create.log" 2>&1 \
    || { log "redis-cli --cluster create failed: $(tail -n 5 "$dir/create.log")"; exit 1; }
  for _ in $(seq 1 300); do
    local ok=1
    for port in "${CLUSTER_PORTS[@]}"; do
      redis-cli -p "$port" CLUSTER INFO 2>/dev/null | grep -q 'cluster_state:ok' || ok=0
      if redis-cli -p "$port" INFO replication 2>/dev/null | grep -q 'role:master' \
        && ! redis-cli -p "$port" INFO replication | grep -q 'state=online'; then ok=0; fi
    done
    [ "$ok" = 1 ] && break
    sleep 0.1
  done
  [ "$ok" = 1 ] || { log "the cluster did not become ok in 30 s"; exit 1; }
  CLUSTER_URLS_TOML=$(printf '"redis://127.0.0.1:%s", ' "${CLUSTER_PORTS[@]}")
  CLUSTER_URLS_TOML="[${CLUSTER_URLS_TOML%, }]"
}

# The client port of one master of the cluster.
cluster_master_port() {
  local port
  for port in "${CLUSTER_PORTS[@]}"; do
    if redis-cli -p "$port" INFO replication | grep -q 'role:master'; then echo "$port"; return; fi
  done
}

# A hash tag whose slot master $1 serves (so every key of a benchmark lands on that master).
tag_on_master() {
  local i
  for i in $(seq 0 1000); do
    if ! redis-cli -p "$1" GET "{t$i}" 2>&1 | grep -q MOVED; then echo "t$i"; return; fi
  done
}

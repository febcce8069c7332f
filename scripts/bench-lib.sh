# scripts/bench-lib.sh — what scripts/bench and its scenario files share (sourced, not run):
# process bookkeeping, free ports, starting the sink / examples / gateways, CPU accounting, and the
# two load generators (wrk closed-loop, examples/openloop.rs open-loop) with their parsers.
#
# Expects: BIN (release dir), GATEWAY, TMP, FIXTURE, THREADS, CONNS, DURATION, RUN_ID, log().
# Pinning: SRV and GEN are command prefixes (arrays) for servers and load generators; empty, or
# `taskset -c …` when BENCH_PIN=1 (scripts/bench sets them).

PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$TMP"
}

# A port nothing listens on now (a connect to it is refused), below the kernel's ephemeral range
# (net.ipv4.ip_local_port_range, 32768.. by default): the burst's 256 client connections and the
# gateway's upstream pool take ephemeral ports, and one could take a listen port picked there.
free_port() {
  local p lo
  lo=$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
  [ "$lo" -gt 12000 ] || lo=32768
  for _ in $(seq 1 100); do
    p=$((10000 + RANDOM % (lo - 10000)))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
  done
  log "no free port found"; exit 1
}

# Waits (at most $2 s, default 10) until 127.0.0.1:$1 accepts connections.
wait_port() {
  local tries=$(( ${2:-10} * 10 ))
  for _ in $(seq 1 "$tries"); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  log "nothing listens on 127.0.0.1:$1 after ${2:-10} s"; return 1
}

# start_example NAME [ENV=VALUE...]: an example that prints its bound address first; sets EX_PID
# and EX_ADDR (host:port).
start_example() {
  local name=$1 out=$TMP/$1.out
  shift
  # A file left by an earlier start of the same example would be read before this one writes.
  rm -f "$out"
  env "$@" "${SRV[@]}" "$BIN/examples/$name" 127.0.0.1:0 >"$out" 2>"$TMP/$name.err" &
  EX_PID=$!
  PIDS+=("$EX_PID")
  for _ in $(seq 1 100); do
    if [ -s "$out" ]; then EX_ADDR=$(head -n1 "$out"); return; fi
    sleep 0.1
  done
  log "$name did not start"; exit 1
}

stop_pid() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

# gateway_config NAME MODE UPSTREAM [EXTRA_DEDUP_TOML]: writes $TMP/NAME.toml on a free port; sets
# GW_PORT and GW_ADDR.
gateway_config() {
  local name=$1 mode=$2 upstream=$3 extra=${4:-}
  GW_PORT=$(free_port)
  GW_ADDR=127.0.0.1:$GW_PORT
  mkdir -p "$TMP/$name"
  cat >"$TMP/$name.toml" <<TOML
listen = "$GW_ADDR"
upstream = "http://$upstream"
mode = "$mode"
data_dir = "$TMP/$name"
[dedup]
hash_secret = "bench-secret-0123456789abcdef"
$extra
TOML
}

# Starts the gateway in mode $1 against upstream $2 on a free port; sets GW_PID, GW_ADDR and
# GW_LOG. Each start gets a fresh data_dir: a spool left by an earlier run would deliver its
# backlog into the next scenario. Default log level (info: one line per decision), stderr to a file.
GW_SEQ=0
start_gateway() {
  local mode=$1 upstream=$2 name
  GW_SEQ=$((GW_SEQ + 1))
  name=gw-$mode-$GW_SEQ
  gateway_config "$name" "$mode" "$upstream"
  GW_LOG=$TMP/$name.log
  env -u RUST_LOG "${SRV[@]}" "$GATEWAY" serve --config "$TMP/$name.toml" 2>"$GW_LOG" &
  GW_PID=$!
  PIDS+=("$GW_PID")
  wait_port "$GW_PORT" || { tail -n 5 "$GW_LOG" >&2; return 1; }
}

# One raw POST of the fixture with versionId $2 (default: the fixture's); echoes the status code.
probe_status() {
  local host=${1%:*} port=${1#*:} body
  body=$(cat "$FIXTURE")
  [ -n "${2:-}" ] && body=$(sed "s/\"versionId\":\"[^\"]*\"/\"versionId\":\"$2\"/" <<<"$body")
  exec 3<>"/dev/tcp/$host/$port"
  printf 'POST /job/bench HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nAuthorization: Bearer bench-0123456789abcdef\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s' \
    "$1" "${#body}" "$body" >&3
  local status
  status=$(timeout 10 head -n1 <&3 | awk '{print $2}')
  exec 3>&-
  echo "${status:-none}"
}

# CPU time (user + system, clock ticks) used so far by the given processes and their children
# (nginx's workers). A per-request CPU cost is steadier than req/s on a shared machine.
cpu_ticks() {
  local total=0 p
  for p in "$@" $(for q in "$@"; do pgrep -P "$q" || true; done); do
    [ -r "/proc/$p/stat" ] || continue
    total=$(( total + $(awk '{sub(/^.*\) /, ""); print $12 + $13}' "/proc/$p/stat") ))
  done
  echo "$total"
}
TICK=$(getconf CLK_TCK)

to_ms() { awk -v v="$1" 'BEGIN { if (v ~ /us$/) printf "%.3f", v/1000; else if (v ~ /ms$/) printf "%.3f", v+0; else if (v ~ /s$/) printf "%.3f", v*1000; else print v }'; }

# --- wrk (closed loop) ------------------------------------------------------------------------
declare -A RPS P50 P99 P999 ERRS CPU OFFERED
# run_wrk NAME ADDR DUP_RATIO CPU_PIDS [CONNS] [RUN_TAG]
run_wrk() {
  local name=$1 addr=$2 ratio=$3 pids=$4 conns=${5:-$CONNS} tag=${6:-$RUN_ID-$1} out=$TMP/$1.wrk
  log "wrk $name: $THREADS threads, $conns connections, $DURATION, dup ratio $ratio"
  local t0 t1 reqs
  # shellcheck disable=SC2086
  t0=$(cpu_ticks $pids)
  timeout 120 "${GEN[@]}" wrk -t"$THREADS" -c"$conns" -d"$DURATION" --latency -s bench/post.lua \
    "http://$addr/job/bench" -- "$FIXTURE" "$ratio" 64 "$tag" >"$out" 2>&1 || true
  # shellcheck disable=SC2086
  t1=$(cpu_ticks $pids)
  reqs=$(awk '/requests in/ {print $1}' "$out")
  CPU[$name]=$(awk -v d=$((t1 - t0)) -v n="${reqs:-0}" -v hz="$TICK" 'BEGIN { if (n > 0) printf "%.1f", d / hz * 1e6 / n; else print "n/a" }')
  RPS[$name]=$(awk '/^Requests\/sec/ {printf "%.0f", $2}' "$out")
  P50[$name]=$(to_ms "$(awk '$1=="50%" {print $2}' "$out")")
  P99[$name]=$(to_ms "$(awk '$1=="99%" {print $2}' "$out")")
  local non2xx sockerr
  non2xx=$(awk '/Non-2xx/ {print $NF}' "$out")
  sockerr=$(awk '/Socket errors/ {gsub(",",""); print $4+$6+$8+$10}' "$out")
  ERRS[$name]=$(( ${non2xx:-0} + ${sockerr:-0} ))
  if [ -z "${RPS[$name]}" ]; then log "wrk $name failed:"; cat "$out" >&2; RPS[$name]=0; fi
  log "  ${RPS[$name]} req/s, p50 ${P50[$name]} ms, p99 ${P99[$name]} ms, errors ${ERRS[$name]}, server CPU ${CPU[$name]} µs/req"
}

# --- examples/openloop.rs (open loop, coordinated-omission corrected) --------------------------
# run_openloop NAME ADDR RATE SECONDS CPU_PIDS [EXTRA ARGS...]
kv() { sed -n "s/.*\\b$1=\\([^ ]*\\).*/\\1/p" <<<"$2"; }
run_openloop() {
  local name=$1 addr=$2 rate=$3 secs=$4 pids=$5 out=$TMP/$1.openloop
  shift 5
  log "openloop $name: $rate req/s for $secs s over $OL_CONNS connections $*"
  local t0 t1 line n
  # shellcheck disable=SC2086
  t0=$(cpu_ticks $pids)
  timeout $(( ${secs%.*} + 60 )) "${GEN[@]}" "$BIN/examples/openloop" "$addr" "$rate" "$secs" \
    --conns "$OL_CONNS" --fixture "$FIXTURE" --run-id "$RUN_ID-$name" "$@" >"$out" 2>&1 || true
  # shellcheck disable=SC2086
  t1=$(cpu_ticks $pids)
  line=$(grep '^requests=' "$out" || true)
  [ -n "$line" ] || { log "openloop $name failed:"; cat "$out" >&2; }
  n=$(kv requests "$line")
  RPS[$name]=$(kv achieved_rps "$line")
  OFFERED[$name]=$rate
  P50[$name]=$(kv p50_ms "$line"); P99[$name]=$(kv p99_ms "$line"); P999[$name]=$(kv p999_ms "$line")
  local e x
  e=$(kv errors "$line"); x=$(kv non_2xx "$line")
  ERRS[$name]=$(( ${e:-0} + ${x:-0} ))
  CPU[$name]=$(awk -v d=$((t1 - t0)) -v n="${n:-0}" -v hz="$TICK" 'BEGIN { if (n > 0) printf "%.1f", d / hz * 1e6 / n; else print "n/a" }')
  log "  $line"
}

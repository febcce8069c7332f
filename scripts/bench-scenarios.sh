# scripts/bench-scenarios.sh — the issue-15 scenarios of scripts/bench (sourced after
# scripts/bench-lib.sh): open-loop latency, the burst, scale with cached identities, p99 during a
# sweep. Each sets entries of the result arrays (RPS, P99, CPU, ...) or KV[...] for the report.

declare -A KV

# Open-loop p99/p99.9 at RATE: the sink alone, nginx → sink, gateway (sync, unique) → sink; the
# same rate, connections and body. Needs SINK, SINK_PID, NGINX_ADDR, NGINX_PID (running).
# Evenly paced (`--pace spin`, the figure), then timer-paced (`-timer` rows: 1 ms clumps, the method
# of sessions 5–11, kept so the figures compare across sessions). OL_ROUNDS rounds of sink, nginx,
# gateway in turn; each row is the median of its rounds: a single 10 s p99 on this host swings by
# milliseconds (the sink alone once read 6.6 ms in a slow minute).
scenario_openloop() {
  local rate=$1 secs=$2 pace tag r name
  start_gateway sync "$SINK"
  for pace in spin timer; do
    tag=""
    [ "$pace" = spin ] || tag=-$pace
    for r in $(seq 1 "$OL_ROUNDS"); do
      run_openloop "ol-sink$tag.$r" "$SINK" "$rate" "$secs" "$SINK_PID" --pace "$pace"
      run_openloop "ol-nginx$tag.$r" "$NGINX_ADDR" "$rate" "$secs" "$NGINX_PID" --pace "$pace"
      run_openloop "ol-gateway$tag.$r" "$GW_ADDR" "$rate" "$secs" "$GW_PID" --pace "$pace"
    done
    for name in "ol-sink$tag" "ol-nginx$tag" "ol-gateway$tag"; do median_rounds "$name" "$OL_ROUNDS"; done
  done
  stop_pid "$GW_PID"
}

# median_rounds NAME N: NAME's row from NAME.1..NAME.N — each figure the median of the rounds',
# errors summed; the per-round p99s are kept in OL_P99S[NAME] for the report.
declare -A OL_P99S
median_rounds() {
  local name=$1 n=$2 arr r vals errs=0
  for arr in RPS P50 P99 P999 CPU OFFERED; do
    vals=""
    for r in $(seq 1 "$n"); do vals+="$(eval echo "\${$arr[$name.$r]:-}") "; done
    eval "$arr[\$name]=\$(tr ' ' '\n' <<<\"\$vals\" | grep -v '^\$' | sort -g | awk '{v[NR]=\$1} END {if (NR) print v[int((NR+1)/2)]}')"
  done
  for r in $(seq 1 "$n"); do errs=$(( errs + ${ERRS[$name.$r]:-0} )); done
  ERRS[$name]=$errs
  vals=""
  for r in $(seq 1 "$n"); do vals+="${P99[$name.$r]:-?} "; done
  OL_P99S[$name]=${vals% }
}

# The burst against the gateway in mode $1: a fresh counting sink, then examples/burst.rs.
scenario_burst() {
  local mode=$1 out=$TMP/burst-$1.out line
  start_example sink SINK_COUNT=1
  local sink=$EX_ADDR sink_pid=$EX_PID
  start_gateway "$mode" "$sink"
  log "burst ($mode): $BURST_EVENTS events, half duplicates, over $BURST_CONNS connections"
  timeout 300 "${GEN[@]}" "$BIN/examples/burst" "$GW_ADDR" "$sink" --events "$BURST_EVENTS" \
    --conns "$BURST_CONNS" --run-id "$RUN_ID-$mode" --drain-timeout 120 >"$out" 2>&1 || true
  line=$(grep '^events=' "$out" || true)
  [ -n "$line" ] || { log "burst $mode failed:"; cat "$out" >&2; line="failed"; }
  KV[burst-$mode]=$line
  log "  $line"
  stop_pid "$GW_PID"
  stop_pid "$sink_pid"
}

# Starts examples/prefilled_gateway with N identities (expiring EXPIRE s after start, sweeping
# every SWEEP s) against $SINK; sets GW_PID, GW_ADDR, and waits until it listens.
start_prefilled() {
  local name=$1 n=$2 expire=$3 sweep=$4 max
  max=$(( n + n / 10 + 2000000 ))
  gateway_config "$name" sync "$SINK" "max_entries = $max
sweep_interval = \"${sweep}s\""
  env RUST_LOG="info,dedup_gateway::store::memory=debug" "${SRV[@]}" "$BIN/examples/prefilled_gateway" \
    "$TMP/$name.toml" "$n" "$expire" >"$TMP/$name.out" 2>"$TMP/$name.log" &
  GW_PID=$!
  PIDS+=("$GW_PID")
  wait_port "$GW_PORT" 180 || { cat "$TMP/$name.out" "$TMP/$name.log" >&2; exit 1; }
  log "  $(head -n1 "$TMP/$name.out"), resident $(awk '/VmRSS/ {printf "%.0f MiB", $2/1024}' "/proc/$GW_PID/status")"
}

# Drop and forward req/s (wrk, closed loop) with N identities cached, memory backend.
scenario_scale() {
  local n=$1 tag=scale-$1
  log "scale: $n identities cached"
  start_prefilled "$tag" "$n" 86400 3600
  # The sweeper's first tick scans the whole map at start; let it pass.
  sleep 2
  timeout 30 "${GEN[@]}" wrk -t1 -c1 -d1s -s bench/post.lua "http://$GW_ADDR/job/bench" -- \
    "$FIXTURE" 1 64 "$RUN_ID-$tag-drop" >/dev/null 2>&1 || true
  run_wrk "$tag-drop" "$GW_ADDR" 1 "$GW_PID" "$CONNS" "$RUN_ID-$tag-drop"
  run_wrk "$tag-forward" "$GW_ADDR" 0 "$GW_PID" "$CONNS" "$RUN_ID-$tag-forward"
  KV[$tag-rss]=$(awk '/VmRSS/ {printf "%.0f", $2/1024}' "/proc/$GW_PID/status")
  stop_pid "$GW_PID"
}

# Open-loop p99 at RATE over SWEEP_N identities, once with all of them expiring so the second
# sweeper tick (SWEEP_AT s after start) removes them inside the window, once with none expiring
# (and no sweep in the window). Verified by the sweeper's debug line ("dedup sweep removed=N").
scenario_sweep() {
  local rate=$1 n=$SWEEP_N at=$SWEEP_AT
  for case in sweep nosweep; do
    log "sweep p99 ($case): $n identities"
    if [ "$case" = sweep ]; then start_prefilled "$case" "$n" "$at" "$at"
    else start_prefilled "$case" "$n" 86400 3600; fi
    # Skip the first tick (a scan with nothing expired); the window then covers second `at`.
    sleep 2
    run_openloop "ol-$case" "$GW_ADDR" "$rate" "$at" "$GW_PID"
    stop_pid "$GW_PID"
    KV[$case-log]=$(grep -o 'dedup sweep.*' "$TMP/$case.log" | sed 's/\x1b\[[0-9;]*m//g' | tr '\n' ' ' || true)
    log "  sweeper said: ${KV[$case-log]:-nothing}"
  done
}

# scripts/bench-report.sh — the criterion step and the markdown scripts/bench appends (sourced).
# One row per target of issue 15: the figure, its value, the target, met yes/no.

run_criterion() {
  log "criterion benches (benches/pipeline)"
  cargo bench --locked --bench pipeline -- --noplot >"$TMP/criterion.txt" 2>&1 || { cat "$TMP/criterion.txt" >&2; exit 1; }
  local dir id mean elems per mops
  for dir in "$TARGET"/criterion/parse_policy_key/*/; do
    id=$(basename "$dir")
    [ -f "$dir/new/estimates.json" ] || continue
    mean=$(grep -o '"mean":{[^}]*}[^}]*}' "$dir/new/estimates.json" | grep -o '"point_estimate":[0-9.e+-]*' | head -n1 | cut -d: -f2)
    elems=$(grep -o '"Elements":[0-9]*' "$dir/new/benchmark.json" | cut -d: -f2)
    per=$(awk -v m="$mean" -v e="${elems:-1}" 'BEGIN {printf "%.0f", m/e}')
    CRIT_ROWS+="| parse_policy_key/$id | ${elems:-1} | $per ns |"$'\n'
    if [ -z "$WORST_NS" ] || [ "$per" -gt "$WORST_NS" ]; then WORST_NS=$per; fi
  done
  for dir in "$TARGET"/criterion/store_reserve_commit_2_threads/*/; do
    id=$(basename "$dir")
    [ -f "$dir/new/estimates.json" ] || continue
    mean=$(grep -o '"mean":{[^}]*}[^}]*}' "$dir/new/estimates.json" | grep -o '"point_estimate":[0-9.e+-]*' | head -n1 | cut -d: -f2)
    mops=$(awk -v m="$mean" 'BEGIN {printf "%.1f", 1000/m}')
    CRIT_ROWS+="| store_reserve_commit_2_threads/$id | 1 | $(awk -v m="$mean" 'BEGIN {printf "%.0f", m}') ns ($mops M ops/s) |"$'\n'
  done
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a != "" && b > 0) printf "%.2f", a/b; else print "n/a" }'; }
met() { awk -v v="$1" -v t="$2" -v d="$3" 'BEGIN { if (v == "n/a" || v == "") print "—"; else if ((d == ">=" && v+0 >= t+0) || (d == "<=" && v+0 <= t+0)) print "yes"; else print "**no**" }'; }
both() { if [ "$1" = yes ] && [ "$2" = yes ]; then echo yes; elif [ "$1" = — ] || [ "$2" = — ]; then echo —; else echo "**no**"; fi; }
diff_ms() { awk -v g="$1" -v s="$2" 'BEGIN { if (g == "" || s == "") print "n/a"; else printf "%.3f", g-s }'; }

# The burst row's value and verdict from examples/burst.rs's line.
burst_cell() {
  local line=${KV[burst-$1]:-}
  local target="0 failures but 503 shedding, each distinct one forwarded once"
  [ -n "$line" ] || { echo "not run | $target | —"; return; }
  [ "$line" = failed ] && { echo "failed to run | $target | **no**"; return; }
  local ok
  ok=$( [ "$(kv failed "$line")" = 0 ] && [ "$(kv forwarded_once "$line")" = yes ] && echo yes || echo "**no**")
  echo "failed $(kv failed "$line"), 503 shed $(kv shed_503 "$line"), once: $(kv forwarded_once "$line"), send $(kv send_secs "$line") s, drained $(kv drain_secs "$line") s | $target | $ok"
}

scenario_rows() {
  local s
  echo "| scenario | req/s | p50 ms | p99 ms | p99.9 ms | errors | server CPU µs/req |"
  echo "|---|---:|---:|---:|---:|---:|---:|"
  for s in sink bare nginx gateway-drop gateway-sync gateway-spool ol-sink ol-nginx ol-gateway \
    ol-sink-timer ol-nginx-timer ol-gateway-timer \
    scale-10000-drop scale-10000-forward "scale-$SCALE_N-drop" "scale-$SCALE_N-forward" ol-nosweep ol-sweep \
    nginx-pin0 nginx-pin1 gateway-sync-pin0 gateway-sync-pin1; do
    [ -n "${RPS[$s]:-}" ] || continue
    echo "| $s | ${RPS[$s]} | ${P50[$s]} | ${P99[$s]} | ${P999[$s]:-} | ${ERRS[$s]} | ${CPU[$s]} |"
  done
}

# Open-loop runs that kept their schedule (achieved ≥ 95 % of offered), or the names that did not:
# a figure from a run that fell behind measures the load generator or the host, not the server.
behind() {
  local n out=""
  for n in "$@"; do
    [ -n "${RPS[$n]:-}" ] || continue
    awk -v a="${RPS[$n]}" -v o="${OFFERED[$n]:-0}" 'BEGIN { exit !(a < 0.95 * o) }' \
      && out+="$n achieved ${RPS[$n]} of ${OFFERED[$n]} req/s; "
  done
  echo "$out"
}

target_rows() {
  local fwd fwd_cpu drop_cpu added added999 sd sf sweep redis spool worst="n/a" lag_ol lag_sw
  fwd=$(ratio "${RPS[gateway-sync]:-}" "${RPS[nginx]:-}")
  fwd_cpu=$(awk -v g="${CPU[gateway-sync]:-}" -v n="${CPU[nginx]:-}" 'BEGIN { if (g == "" || n == "" || g == "n/a" || n == "n/a") print "n/a"; else if (g+0 <= n+0) print "yes"; else print "**no**" }')
  drop_cpu=$(ratio "${CPU[gateway-drop]:-}" "${CPU[bare]:-}")
  added=$(diff_ms "${P99[ol-gateway]:-}" "${P99[ol-sink]:-}")
  added999=$(diff_ms "${P999[ol-gateway]:-}" "${P999[ol-sink]:-}")
  sd=$(ratio "${RPS[scale-$SCALE_N-drop]:-}" "${RPS[scale-10000-drop]:-}")
  sf=$(ratio "${RPS[scale-$SCALE_N-forward]:-}" "${RPS[scale-10000-forward]:-}")
  sweep=$(ratio "${P99[ol-sweep]:-}" "${P99[ol-nosweep]:-}")
  lag_ol=$(behind ol-sink ol-gateway)
  lag_sw=$(behind ol-sweep ol-nosweep)
  [ -n "$lag_ol" ] && added="not valid (${lag_ol%; }) $added"
  [ -n "$lag_sw" ] && sweep="not valid (${lag_sw%; }) $sweep"
  redis=$(ratio "${KV[redis-drop-redis]:-}" "${KV[redis-drop-memory]:-}")
  spool=$(ratio "${RPS[gateway-spool]:-}" "${RPS[gateway-sync]:-}")
  [ -n "$WORST_NS" ] && worst=$(awk -v n="$WORST_NS" 'BEGIN {printf "%.2f", n/1000}')
  echo "| figure | value | target | met |"
  echo "|---|---:|---:|---|"
  echo "| forward (sync, unique) req/s ÷ nginx proxy_pass req/s; CPU µs/req gateway vs nginx | $fwd; ${CPU[gateway-sync]:-?} vs ${CPU[nginx]:-?} | ≥ 1.0, and CPU ≤ nginx's | $(both "$(met "$fwd" 1.0 '>=')" "$fwd_cpu") |"
  echo "| drop path CPU µs/req ÷ bare axum CPU µs/req | $drop_cpu | ≤ 1.2 | $(met "$drop_cpu" 1.2 '<=') |"
  echo "| added p99 at half load, open loop (ms); p99.9 added | $added; $added999 | ≤ 1 | $([ -n "$lag_ol" ] && echo — || met "$added" 1 '<=') |"
  echo "| the same, nginx instead of the gateway (ms); p99.9 added | $(diff_ms "${P99[ol-nginx]:-}" "${P99[ol-sink]:-}"); $(diff_ms "${P999[ol-nginx]:-}" "${P999[ol-sink]:-}") | — | — |"
  echo "| the same, timer-paced (1 ms clumps, sessions 5–11): gateway; nginx | $(diff_ms "${P99[ol-gateway-timer]:-}" "${P99[ol-sink-timer]:-}"); $(diff_ms "${P99[ol-nginx-timer]:-}" "${P99[ol-sink-timer]:-}") | — | — |"
  echo "| drop req/s, $SCALE_N identities cached ÷ 10,000 | $sd | ≥ 0.9 | $(met "$sd" 0.9 '>=') |"
  echo "| forward req/s, $SCALE_N identities cached ÷ 10,000 | $sf | ≥ 0.9 | $(met "$sf" 0.9 '>=') |"
  echo "| open-loop p99 while sweeping $SWEEP_N expired ÷ without a sweep | $sweep | ≤ 2 | $([ -n "$lag_sw" ] && echo — || met "$sweep" 2 '<=') |"
  echo "| resident bytes per identity at $MEM_N | ${MEM_PER_KEY:-n/a} | ≤ 56 | $(met "${MEM_PER_KEY:-}" 56 '<=') |"
  echo "| Redis drop req/s ÷ memory drop req/s (one local Redis); redis-benchmark EVALSHA reserve, GET req/s | $redis; ${KV[redis-redisbench-EVALSHA-reserve]:-n/a}, ${KV[redis-redisbench-GET]:-n/a} | ≥ 0.5 | $(met "$redis" 0.5 '>=') |"
  echo "| spool req/s ÷ sync forward req/s | $spool | ≥ 0.7 | $(met "$spool" 0.7 '>=') |"
  echo "| burst, sync mode: $BURST_EVENTS events / $BURST_CONNS conns, half duplicates | $(burst_cell sync) |"
  echo "| burst, spool mode | $(burst_cell spool) |"
  echo "| parse + policy + key per record, worst fixture (µs) | $worst | ≤ 2 | $(met "$worst" 2 '<=') |"
}

write_report() {
  local commit dirty="" cpu_model
  commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
  [ -n "$(git status --porcelain 2>/dev/null | grep -v '^??' || true)" ] && dirty=" (+ uncommitted changes)"
  cpu_model=$(awk -F: '/model name/ {sub(/^ +/, "", $2); print $2; exit}' /proc/cpuinfo)
  grep -q '^## Runs of scripts/bench' "$OUT" 2>/dev/null || printf '\n## Runs of scripts/bench\n'
  echo
  echo "### Run $(date -u '+%Y-%m-%d %H:%M UTC') — commit \`$commit\`$dirty"
  echo
  echo "Machine: $CORES cores, $cpu_model; $(free -g 2>/dev/null | awk '/^Mem:/ {print $2 " GiB"}'). wrk $THREADS threads, $CONNS connections, $DURATION per closed-loop run;"
  echo "open loop (\`examples/openloop.rs\`) $HALF req/s (half the gateway's forward max) for $OL_SECS s over $OL_CONNS connections, $OL_ROUNDS rounds (median), evenly paced (\`--pace spin\`; \`-timer\` rows: tokio's 1 ms timer ticks, clumps)."
  echo "Payload \`$(basename "$FIXTURE")\` ($(wc -c <"$FIXTURE") bytes). $PIN_NOTE."
  echo
  scenario_rows
  echo
  echo "Gateway log (info level, stderr to a file): $SYNC_LOG_LINES lines for the sync wrk runs."
  echo "Open-loop p99 of each round (ms; the rows above are medians): sink ${OL_P99S[ol-sink]:-n/a}; nginx ${OL_P99S[ol-nginx]:-n/a}; gateway ${OL_P99S[ol-gateway]:-n/a}; timer-paced: sink ${OL_P99S[ol-sink-timer]:-n/a}; nginx ${OL_P99S[ol-nginx-timer]:-n/a}; gateway ${OL_P99S[ol-gateway-timer]:-n/a}."
  echo "Heap allocations per request on the gateway's runtime thread (\`examples/allocs_per_request.rs\`): drop path ${ALLOCS_DROP:-n/a}, forward path ${ALLOCS_FWD:-n/a}."
  [ -n "${KV[scale-$SCALE_N-rss]:-}" ] && echo "Scale: the gateway's resident set with $SCALE_N identities: ${KV[scale-$SCALE_N-rss]} MiB (10,000: ${KV[scale-10000-rss]:-?} MiB)."
  [ -n "${KV[sweep-log]:-}${KV[nosweep-log]:-}" ] && echo "Sweeper (debug log): with expiry: \`${KV[sweep-log]:-none}\`; without: \`${KV[nosweep-log]:-none}\`."
  for m in sync spool; do [ -n "${KV[burst-$m]:-}" ] && echo "Burst $m: \`${KV[burst-$m]}\`."; done
  [ -n "$SPOOL_NOTE" ] && echo "$SPOOL_NOTE."
  echo
  target_rows
  if [ -n "$REDIS_TABLE" ]; then
    echo
    echo "$REDIS_TABLE"
  fi
  if [ -n "$CRIT_ROWS" ]; then
    echo
    echo "| criterion bench | records | time per record |"
    echo "|---|---:|---:|"
    printf '%s' "$CRIT_ROWS"
  fi
}

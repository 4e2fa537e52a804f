#!/usr/bin/env bash
# Every benchmark in one command, ending in one table: each figure the benchmarks measure, for
# tideway, nginx, HAProxy and the backend direct (the limit), with the target it is held to.
# Before the table, each benchmark's own output: the side-by-side comparison, the pool at
# scale (picks and changes), registrations by pool size, latency under churn.
# Writes everything to target/bench-all.md as well, and cargo's output to target/bench-all.log.
# Took 7-10 minutes on a 2-core machine (with the release build already there); run it on a quiet one.
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/bench-all.md
log=target/bench-all.log   # cargo's own output (builds, criterion's details), for when a step fails
parts=target/bench-all     # each benchmark's output, read back for the table
mkdir -p "$parts"

# The one table. Rows of the comparison are read by proxy name; criterion's lines by bench id
# (the middle of its three estimates).
table() {
  local c="$parts/compare.md"
  row() { awk -F'|' -v p="$1" -v f="$2" '$2 ~ "^ "p" $" { gsub(/^ +| +$/, "", $f); print $f; exit }' "$c"; }
  p99() { row "$1" 7 | sed 's|.*/ *||'; }
  tcp() { awk -F'|' -v p="$1" -v f="$2" '/^\| proxy \(tcp\)/ { t = 1 } t && $2 ~ "^ "p" $" { gsub(/^ +| +$/, "", $f); print $f; exit }' "$c"; }
  crit() {
    awk -v id="$1" '
      $1 == id && NF == 1 { want = 1; next }
      $1 == id || want { for (i = 1; i <= NF; i++) if ($i == "time:") { print $(i + 3), $(i + 4); exit } }
      { want = 0 }' "$parts/pool.txt"
  }
  reg() {
    awk -v a="$1" '$1 == a {
      for (i = 1; i <= NF; i++) if ($i == "CPU") { print $(i + 3) " -> " $(i + 6) " µs " $(i + 7) }
    }' "$parts/registrations.txt" | tr -d ','
  }
  echo "| figure | tideway | nginx | HAProxy | direct to the backend | target |"
  echo "|---|---|---|---|---|---|"
  echo "| CPU µs per HTTP keep-alive request | $(row tideway 3) ($(row tideway 4) nginx) | $(row nginx 3) | $(row haproxy 3) | - | ≤ 0.85x nginx |"
  echo "| HTTP p99 µs at half nginx's req/s | $(p99 tideway) ($(row tideway 8) nginx) | $(p99 nginx) | $(p99 haproxy) | $(p99 "direct to the backend") | ≤ 1.00x nginx |"
  echo "| CPU µs per WebSocket echo | $(row tideway 9) ($(row tideway 10) nginx) | $(row nginx 9) | $(row haproxy 9) | - | ≤ 0.9x nginx |"
  echo "| KiB per idle WebSocket, 8,000 open | $(row tideway 12) | $(row nginx 12) | $(row haproxy 12) | - | ≤ 2.44 KiB (2.5 KB) |"
  echo "| RSS after they close / before | $(row tideway 15) | $(row nginx 15) | $(row haproxy 15) | - | ≤ 1.5 |"
  echo "| TCP MB/s | $(tcp tideway 3) | $(tcp nginx 3) | $(tcp haproxy 3) | - | - |"
  echo "| TCP CPU ms per MB | $(tcp tideway 6) | $(tcp nginx 6) | $(tcp haproxy 6) | - | - |"
  for a in round_robin least_conn p2c hash; do
    echo "| pick at 10,000 backends, $a | $(crit pick/$a/10000) | - | - | - | < 100 ns |"
  done
  for a in round_robin least_conn p2c hash; do
    echo "| an add and a remove (two diffs) at 10,000 backends, $a | $(crit change/$a/10000) | - | - | - | < 1 ms each |"
  done
  for a in round_robin least_conn p2c hash; do
    echo "| tideway CPU per HTTP registration, empty -> at 5,000, $a | $(reg $a) | - | - | - | ≤ 1.5x |"
  done
  echo "| HTTP p99 with 1,000 changes/s at 10,000 backends / quiet | $(sed -n 's/^p99 with churn \/ quiet: //p' "$parts/churn.txt") | - | - | - | < 1.10x |"
  echo "| 30 backends at weight 1000 on hash | $(sed -n 's/^weights: 30 backends at weight 1000 on hash: //p' "$parts/pool.txt") | - | - | - | < 3 s, < 64 MB |"
}

# `scripts/bench.sh --table` prints the table again from the last run's outputs.
if [ "${1:-}" = "--table" ]; then
  table
  exit
fi
: > "$log"

cargo bench --bench compare 2>>"$log" | sed -n '/^| proxy/,$p' > "$parts/compare.md"
cargo bench --bench pool 2>>"$log" | grep -E '^(weights:|pick/|change/)|time:' > "$parts/pool.txt"
cargo bench --bench registrations 2>>"$log" | grep -E 'us/registration|^registrations:' > "$parts/registrations.txt"
cargo bench --bench churn 2>>"$log" | grep -E '^(churn:|quiet:|churning:|p99)' > "$parts/churn.txt"

{
  echo "# tideway benchmarks, $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD 2>>"$log" || echo unknown)"
  echo
  echo "## tideway vs nginx vs HAProxy (cargo bench --bench compare)"
  echo
  cat "$parts/compare.md"
  echo
  echo "## The pool at scale (cargo bench --bench pool)"
  echo
  echo '```'
  cat "$parts/pool.txt"
  echo '```'
  echo
  echo "## Registrations by pool size (cargo bench --bench registrations)"
  echo
  echo '```'
  cat "$parts/registrations.txt"
  echo '```'
  echo
  echo "## HTTP latency under pool churn (cargo bench --bench churn)"
  echo
  echo '```'
  cat "$parts/churn.txt"
  echo '```'
  echo
  echo "## Every figure in one table"
  echo
  table
} | tee "$out"

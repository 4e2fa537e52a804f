#!/usr/bin/env bash
# Every benchmark in one command: the side-by-side table (tideway, nginx, HAProxy, and the
# backend direct as the limit), then the pool at scale (picks and changes, registrations by
# pool size, latency under churn). Writes everything to target/bench-all.md as well.
# Took about 8 minutes on a 2-core machine (with the release build already there); run it on a quiet one.
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/bench-all.md
log=target/bench-all.log   # cargo's own output (builds, criterion's details), for when a step fails
mkdir -p target
: > "$log"
{
  echo "# tideway benchmarks, $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD 2>>"$log" || echo unknown)"
  echo
  echo "## tideway vs nginx vs HAProxy (cargo bench --bench compare)"
  echo
  cargo bench --bench compare 2>>"$log" | sed -n '/^| proxy/,$p'
  echo
  echo "## The pool at scale (cargo bench --bench pool)"
  echo
  echo '```'
  cargo bench --bench pool 2>>"$log" | grep -E '^(weights:|pick/|change/)|time:'
  echo '```'
  echo
  echo "## Registrations by pool size (cargo bench --bench registrations)"
  echo
  echo '```'
  cargo bench --bench registrations 2>>"$log" | grep -E 'us/registration|^registrations:'
  echo '```'
  echo
  echo "## HTTP latency under pool churn (cargo bench --bench churn)"
  echo
  echo '```'
  cargo bench --bench churn 2>>"$log" | grep -E '^(churn:|quiet:|churning:|p99)'
  echo '```'
} | tee "$out"

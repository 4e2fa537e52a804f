#!/usr/bin/env bash
# Stand-in for the nginx binary, so nginx's own test suite (nginx/nginx-tests) drives tideway.
# A dev tool, not run in CI (the suite cannot be fetched there); see docs/nginx-tests.md.
#
#   TEST_NGINX_BINARY=$PWD/scripts/nginx-tests-standin.sh \
#   TIDEWAY_BIN=$PWD/target/debug/tideway prove -v upstream_hash.t   # in the suite's directory
#
# lib/Test/Nginx.pm calls the binary as:
#   -V                      (stderr) version and configure arguments: has_module / has_version
#   -p DIR/ -c nginx.conf -e error.log [-g GLOBALS]
#                           run in the foreground; the harness waits for the `pid` file, then
#                           stops the process with SIGQUIT (SIGTERM after 90 s) and waitpid()s it
#   -t / -T, -s SIGNAL      (rare) check the config / signal the running process
# This script answers -V itself, and otherwise becomes `tideway run --nginx CONF` by exec, so
# the pid the harness forked is tideway's. The pid file is written only once every `listen`
# port of the config accepts, which is what nginx's pid file means to the harness.
# tideway's stderr goes to the error log named by -e (the harness scans it for "[alert]").
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
tideway=${TIDEWAY_BIN:-${CARGO_TARGET_DIR:-$here/target}/debug/tideway}
version=${TIDEWAY_STANDIN_VERSION:-1.22.1}

prefix=""
conf="conf/nginx.conf"
errlog=""
globals=""
action=run
signal=""
while [ $# -gt 0 ]; do
  case "$1" in
    -v) echo "nginx version: nginx/$version" >&2; exit 0 ;;
    -V) action=version; shift ;;
    -p) prefix=$2; shift 2 ;;
    -c) conf=$2; shift 2 ;;
    -e) errlog=$2; shift 2 ;;
    -g) globals=$2; shift 2 ;;
    -t) action=check; shift ;;
    -T) action=check; shift ;;
    -s) action=signal; signal=$2; shift 2 ;;
    -q) shift ;;
    *) echo "nginx-tests-standin: unknown argument $1" >&2; exit 1 ;;
  esac
done

if [ "$action" = version ]; then
  # The modules of Debian's nginx 1.22 build (the baseline, scripts/nginx-tests-baseline.sh),
  # so that both select the same test files and cases; stream is built in, as tideway loads
  # no dynamic modules and the harness must not add `load_module` lines.
  cat >&2 <<EOF
nginx version: nginx/$version
built with OpenSSL 3.0 (tideway stand-in: $tideway)
TLS SNI support enabled
configure arguments: --with-compat --with-debug --with-pcre-jit --with-http_ssl_module --with-http_stub_status_module --with-http_realip_module --with-http_auth_request_module --with-http_v2_module --with-http_dav_module --with-http_slice_module --with-threads --with-http_addition_module --with-http_flv_module --with-http_gunzip_module --with-http_gzip_static_module --with-http_mp4_module --with-http_random_index_module --with-http_secure_link_module --with-http_sub_module --with-mail_ssl_module --with-stream_ssl_module --with-stream_ssl_preread_module --with-stream_realip_module --with-stream
EOF
  exit 0
fi

[ -n "$prefix" ] || prefix=$(pwd)/
case "$conf" in /*) ;; *) conf="$prefix$conf" ;; esac
if [ -n "$errlog" ]; then
  case "$errlog" in /*) ;; *) errlog="$prefix$errlog" ;; esac
else
  errlog="${prefix}logs/error.log"
fi

if [ "$action" = check ]; then
  exec "$tideway" check --nginx "$conf"
fi

# The pid file: the `pid` directive of the config or of -g, else nginx's default.
pidfile=$( { printf '%s\n' "$globals"; cat "$conf"; } \
  | sed -n 's/^[[:space:]]*pid[[:space:]]\{1,\}\([^;[:space:]]*\);.*/\1/p' | head -n 1)
[ -n "$pidfile" ] || pidfile=logs/nginx.pid
case "$pidfile" in /*) ;; *) pidfile="$prefix$pidfile" ;; esac

if [ "$action" = signal ]; then
  pid=$(cat "$pidfile")
  case "$signal" in
    stop) kill -TERM "$pid" ;;
    quit) kill -QUIT "$pid" ;;
    reload) kill -HUP "$pid" ;;
    reopen) kill -USR1 "$pid" ;;
    *) echo "nginx-tests-standin: unknown signal $signal" >&2; exit 1 ;;
  esac
  exit 0
fi

# The TCP ports tideway must listen on: every `listen` of the config that is an address
# (`listen 127.0.0.1:8080`, `listen 8080`), not a unix socket nor udp.
ports=$(sed -n 's/^[[:space:]]*listen[[:space:]]\{1,\}\([^;]*\);.*/\1/p' "$conf" \
  | grep -v -e unix: -e '[[:space:]]udp' \
  | sed -n 's/^\([^[:space:]]*:\)\{0,1\}\([0-9]\{1,5\}\)\([[:space:]].*\)\{0,1\}$/\2/p' | sort -u)

# With NGINX_TESTS_NOTES=DIR, keep what `tideway check --nginx` says of each config (what it
# ignores, and why an import fails) in DIR/<test file>.check, to explain the failing cases.
if [ -n "${NGINX_TESTS_NOTES:-}" ]; then
  mkdir -p "$NGINX_TESTS_NOTES"
  name=$(basename "$(ps -o args= -p "$PPID" | awk '{print $NF}')")
  "$tideway" check --nginx "$conf" >>"$NGINX_TESTS_NOTES/$name.check" 2>&1 || true
fi

mkdir -p "$(dirname "$errlog")" "$(dirname "$pidfile")"
touch "$errlog"
self=$$
(
  # Wait (at most 10 s) for every port, then publish the pid; give up if tideway exited.
  for _ in $(seq 1 200); do
    kill -0 "$self" 2>/dev/null || exit 0
    all=1
    for p in $ports; do
      ss -Hltn "sport = :$p" | grep -q . || { all=0; break; }
    done
    if [ "$all" = 1 ]; then
      echo "$self" > "$pidfile"
      exit 0
    fi
    sleep 0.05
  done
) </dev/null >/dev/null 2>&1 &

# The suite's configs often hold locations that serve files (`root`, `ssi`): leave them out
# when this tideway can (`--skip-unproxied`); otherwise they answer 404.
extra=()
if "$tideway" run --help 2>/dev/null | grep -q -- --skip-unproxied; then
  extra+=(--skip-unproxied)
fi

exec "$tideway" run --nginx "$conf" "${extra[@]}" --admin 127.0.0.1:0 \
  --data-dir "${prefix}tideway-data" >>"$errlog" 2>&1

#!/usr/bin/env bash
# The test command: installs what a fresh Debian machine is missing, then runs every check and test.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
# The build itself needs only Rust and a C compiler (docs/install.md): no cmake, no protoc.
command -v cc >/dev/null || need+=(gcc)
command -v nginx >/dev/null || need+=(nginx-light)   # tests compare sticky mapping with real nginx
# nginx-light has no stream module: tests compare stream { proxy_ssl } with real nginx's
[ -e /usr/lib/nginx/modules/ngx_stream_module.so ] || need+=(libnginx-mod-stream)
command -v etcd >/dev/null || need+=(etcd-server)    # tests run real etcd processes
command -v supervisord >/dev/null || need+=(supervisor)  # the autoscale hook drives a real supervisord
command -v php >/dev/null || need+=(php-cli)             # the Workerman registration helper is tested with php-cli
command -v chromium >/dev/null || need+=(chromium)       # the dashboard is tested in headless Chromium
command -v chromedriver >/dev/null || need+=(chromium-driver)
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv python3-pip)  # deploy validation tools (PyPI, in a venv)
command -v kubectl >/dev/null || need+=(kubernetes-client)  # deploy validation renders the kustomizations
[ -x /usr/bin/kill ] || [ -x /bin/kill ] || need+=(procps)  # tests signal tideway (kill -TERM/-QUIT/-HUP/-USR1/-USR2)
command -v goaccess >/dev/null || need+=(goaccess)        # the text access log is parsed by GoAccess as nginx's combined
# The admin API is checked with openapi-spec-validator and schemathesis (PyPI, in a venv, by
# scripts/api-check.sh from tests/openapi.rs; python3-venv above).
command -v groff >/dev/null || need+=(groff-base)         # tests render the man pages
command -v systemd-analyze >/dev/null || need+=(systemd)  # the .deb check verifies the unit
command -v curl >/dev/null || need+=(curl)                # the .deb check asks /readyz
command -v nghttp >/dev/null || need+=(nghttp2-client)    # HTTP/2 tests fetch with nghttp (h2load benches)
/usr/bin/python3 -c 'import h2' 2>/dev/null || need+=(python3-h2)  # HTTP/2 abuse tests send raw frames with Python's h2
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}"
fi

# A clean build needs a few GB; say so up front rather than fail deep inside a link.
export CARGO_INCREMENTAL=0  # one-shot build: incremental caches would only take disk
avail_kb=$(df -Pk . | awk 'NR==2 {print $4}')
echo "disk: $((avail_kb / 1024 / 1024)) GiB free where the build runs"
if [ "$avail_kb" -lt $((4 * 1024 * 1024)) ]; then
  echo "warning: under 4 GiB free; the build may not fit" >&2
fi

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
log=$(mktemp)
set +e
cargo test --locked 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
passed=$(grep -Eo '^test result: .* ([0-9]+) passed' "$log" | grep -Eo '[0-9]+ passed' | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed' "$log" | awk '{s+=$1} END {print s+0}')
rm -f "$log"
echo "tests: $passed passed, $failed failed"
[ "$status" = 0 ] || exit "$status"

# The .deb: packaged from the debug binaries the tests just ran (a release build would add
# minutes), installed, run as the unit runs it, removed (scripts/deb-check.sh).
deb_start=$SECONDS
TIDEWAY_DEB_PROFILE=dev TIDEWAY_DEB_BUILD=no scripts/deb-check.sh
echo "deb check: $((SECONDS - deb_start)) s"

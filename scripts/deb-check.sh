#!/usr/bin/env bash
# The .deb, checked as an operator would use it (issue 23): build it (scripts/deb.sh), install
# it with dpkg, verify the unit with systemd-analyze, run the unit's ExecStartPre and ExecStart
# command lines as the unit's User= with its capability (CI has no running systemd), wait for
# /readyz to answer 200, stop it with SIGTERM, then remove and purge the package and check that
# nothing is left. Needs root. scripts/test.sh runs it with TIDEWAY_DEB_PROFILE=dev.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deb.sh
deb=$(ls -t "${CARGO_TARGET_DIR:-target}"/debian/tideway_*.deb | head -1)
fail() { echo "deb check: $*" >&2; exit 1; }

# The shipped config listens on 127.0.0.1:8080 (traffic) and 127.0.0.1:9090 (admin).
for port in 8080 9090; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    fail "port $port is taken on this machine; the installed service needs it"
  fi
done

dpkg -i "$deb"
pid=
cleanup() {
  if [ -n "$pid" ]; then kill -TERM "$pid" 2>/dev/null || true; fi
  dpkg -P tideway >/dev/null 2>&1 || true
}
trap cleanup EXIT

unit=$(dpkg -L tideway | grep '/systemd/system/tideway\.service$')
# verify exits 0 on unknown keys and bad values (it only warns), so any output is a failure.
verify=$(systemd-analyze verify "$unit" 2>&1) || fail "systemd-analyze verify: $verify"
[ -z "$verify" ] || fail "systemd-analyze verify warns: $verify"
echo "deb check: systemd-analyze verify $unit: no warnings"
/usr/bin/tideway --version
man -w tideway tideway-run >/dev/null
bash -c 'source /usr/share/bash-completion/completions/tideway && complete -p tideway' >/dev/null
getent passwd tideway >/dev/null || fail "no tideway user after install"
[ "$(stat -c %U /var/lib/tideway)" = tideway ] || fail "/var/lib/tideway is not the tideway user's"

key() { sed -n "s/^$1=//p" "$unit"; }
user=$(key User)
group=$(key Group)
nofile=$(key LimitNOFILE)
wd=$(key WorkingDirectory)
# The unit's User=, Group=, AmbientCapabilities=CAP_NET_BIND_SERVICE, CapabilityBoundingSet=,
# NoNewPrivileges=, WorkingDirectory= and LimitNOFILE= (when the hard limit allows it); the
# command lines are split on spaces, as systemd does for these. Each subshell execs, so $pid is
# tideway itself.
as_unit=(setpriv --reuid "$user" --regid "$group" --init-groups
  --inh-caps +net_bind_service --ambient-caps +net_bind_service
  --bounding-set -all,+net_bind_service --no-new-privs --)
read -ra pre <<<"$(key ExecStartPre)"
read -ra start <<<"$(key ExecStart)"
(cd "$wd" && exec "${as_unit[@]}" "${pre[@]}")
(cd "$wd" && { ulimit -n "$nofile" 2>/dev/null || true; } && exec "${as_unit[@]}" "${start[@]}") &
pid=$!

code=
for _ in $(seq 1 150); do
  code=$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:9090/readyz || true)
  [ "$code" = 200 ] && break
  kill -0 "$pid" 2>/dev/null || fail "the service exited before /readyz answered"
  sleep 0.2
done
[ "$code" = 200 ] || fail "/readyz answered '$code', not 200, within 30 s"
[ "$(ps -o user= -p "$pid")" = "$user" ] || fail "the service does not run as $user"
grep -q '^CapAmb:.*0*400$' "/proc/$pid/status" || fail "the service lacks CAP_NET_BIND_SERVICE"
echo "deb check: /readyz 200 from the installed service"

kill -TERM "$pid"
status=0
wait "$pid" || status=$?
pid=
[ "$status" = 0 ] || fail "the service exited with $status after SIGTERM"

dpkg -r tideway
[ ! -e /usr/bin/tideway ] || fail "/usr/bin/tideway is still there after dpkg -r"
[ -e /etc/tideway/tideway.toml ] || fail "dpkg -r removed the conffile (only purge should)"
[ -e /var/lib/tideway/admin.token ] || fail "dpkg -r removed the data (only purge should)"
getent passwd tideway >/dev/null || fail "dpkg -r removed the tideway user (only purge should)"
dpkg -P tideway
[ ! -e /etc/tideway/tideway.toml ] || fail "the conffile is still there after purge"
[ ! -e /var/lib/tideway ] || fail "/var/lib/tideway is still there after purge"
! getent passwd tideway >/dev/null || fail "the tideway user is still there after purge"
echo "deb check: installed, served /readyz as $user, removed and purged"

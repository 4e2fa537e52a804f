#!/usr/bin/env bash
# Run nginx's own test files with real nginx and with tideway (through the stand-ins) and print
# the per-file rows of docs/nginx-tests.md. A dev tool, not run in CI.
#
#   scripts/nginx-tests-table.sh /tmp/nginx-tests OUTDIR proxy_chunked.t upstream_hash.t ...
#
# Each file runs once per binary (`perl FILE`, the TAP kept in OUTDIR/FILE.{nginx,tideway}, and
# what `tideway check --nginx` said of its configs in OUTDIR/notes/FILE.check).
# A row counts the file's own cases: the harness's two closing checks ("no alerts", "no
# sanitizer errors") are left out, and so is a case the file skips (`# skip`, e.g. a "long
# test" without TEST_NGINX_UNSAFE). A TODO case passes only if it really passes.
# The failing case numbers of tideway's run are listed so each can be explained.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
suite=$(cd "$1" && pwd)
out=$2
shift 2
mkdir -p "$out"
out=$(cd "$out" && pwd)

export TEST_NGINX_MODULES=${TEST_NGINX_MODULES:-/usr/lib/nginx/modules}
export TIDEWAY_BIN=${TIDEWAY_BIN:-${CARGO_TARGET_DIR:-$here/target}/debug/tideway}

# Cases planned, passed, failed numbers (comma-separated) or the skip reason, from one TAP file.
count() {
  perl -ne '
    BEGIN { ($plan, $pass, @fail, $skip) = (0, 0) }
    if (/^1\.\.(\d+)(?:\s+#\s*skip\w*\s*(.*))?/i) { $plan = $1; $skip = $2 if defined $2; }
    next unless /^(not )?ok (\d+)(.*)$/;
    my ($not, $n, $rest) = ($1, $2, $3);
    $seen++;
    next if $rest =~ /- no (alerts|sanitizer errors)\s*$/;
    if ($rest =~ /^\s*#\s*skip/i) { $skipped++ }
    elsif (!$not && $rest !~ /#\s*todo/i) { $pass++ }
    else { push @fail, $n }
    END {
      if (defined $skip) { print "0\t0\tskipped: $skip\n" }
      else {
        push @fail, "did not finish: ran " . ($seen // 0) . " of " . $plan
          if ($seen // 0) < $plan;
        $plan = $plan > 2 ? $plan - 2 - ($skipped // 0) : 0;
        print "$plan\t$pass\t", join(",", @fail), "\n";
      }
    }' "$1"
}

cd "$suite"
printf '| file | cases | tideway | nginx 1.22 | tideway fails |\n|---|---|---|---|---|\n'
for f in "$@"; do
  TEST_NGINX_GLOBALS="user root;" TEST_NGINX_BINARY="$here/scripts/nginx-tests-baseline.sh" \
    timeout 600 perl "$f" >"$out/$f.nginx" 2>&1 &
  base=$!
  NGINX_TESTS_NOTES="$out/notes" TEST_NGINX_BINARY="$here/scripts/nginx-tests-standin.sh" \
    timeout 600 perl "$f" >"$out/$f.tideway" 2>&1 || true
  wait "$base" || true
  IFS=$'\t' read -r plan npass _ < <(count "$out/$f.nginx")
  IFS=$'\t' read -r _ tpass tfail < <(count "$out/$f.tideway")
  printf '| %s | %s | %s | %s | %s |\n' "$f" "$plan" "$tpass" "$npass" "$tfail"
done

#!/usr/bin/env bash
# The baseline for docs/nginx-tests.md: the real nginx (Debian's 1.22 by default), whose -V lists
# dynamic modules the package does not install (geoip, perl, xslt, image_filter, mail): -V is
# answered without them, so the harness adds no `load_module` for a missing file. Everything
# else is passed to nginx unchanged. Use with TEST_NGINX_MODULES=/usr/lib/nginx/modules.
set -euo pipefail
nginx=${NGINX_BIN:-/usr/sbin/nginx}
modules=${TEST_NGINX_MODULES:-/usr/lib/nginx/modules}
if [ "${1:-}" = -V ]; then
  out=$("$nginx" -V 2>&1)
  for m in $(printf '%s\n' "$out" | grep -o -- '--with-[a-z0-9_]*=dynamic'); do
    name=${m#--with-}
    name=${name%=dynamic}
    name=${name%_module}
    ls "$modules"/ngx_*"${name#http_}"*.so >/dev/null 2>&1 || out=${out//" $m"/}
  done
  printf '%s\n' "$out" >&2
  exit 0
fi
exec "$nginx" "$@"

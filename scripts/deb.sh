#!/usr/bin/env bash
# Builds the .deb (docs/install.md): target/debian/tideway_<version>-1_<arch>.deb with the
# binaries, the systemd unit, /etc/tideway/tideway.toml, shell completions and man pages.
# The completions and man pages come from the binary just built (`tideway completions`,
# `tideway man`), so they match its command line.
#
#   scripts/deb.sh                      # release profile (stripped)
#   TIDEWAY_DEB_PROFILE=dev scripts/deb.sh   # from the debug build (CI's quick check)
#   TIDEWAY_DEB_BUILD=no ...            # package the binaries already built (by `cargo test`)
set -euo pipefail
cd "$(dirname "$0")/.."

profile=${TIDEWAY_DEB_PROFILE:-release}
# Pinned: cargo-deb 3.8 packages the dev profile with a warning; later versions may refuse it.
command -v cargo-deb >/dev/null || cargo install cargo-deb --locked --version 3.8.0

target=${CARGO_TARGET_DIR:-target}
if [ "$profile" = dev ]; then out=$target/debug; else out=$target/$profile; fi
if [ "${TIDEWAY_DEB_BUILD:-yes}" != no ]; then
  cargo build --locked --profile "$profile" --bin tideway --bin tideway-demo-client
fi
for bin in tideway tideway-demo-client; do
  [ -x "$out/$bin" ] || { echo "deb: $out/$bin is not built" >&2; exit 1; }
done

assets=$out/package
rm -rf "$assets"
mkdir -p "$assets/completions" "$assets/man"
"$out/tideway" completions bash >"$assets/completions/tideway.bash"
"$out/tideway" completions zsh >"$assets/completions/_tideway"
"$out/tideway" completions fish >"$assets/completions/tideway.fish"
"$out/tideway" man --out-dir "$assets/man" >/dev/null
gzip -9n "$assets"/man/*.1

fast=()
[ "$profile" = dev ] && fast=(--fast)  # a check, not a release: quicker compression
cargo deb --no-build --locked --profile "$profile" "${fast[@]}"

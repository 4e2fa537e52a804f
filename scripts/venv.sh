# Sourced by the scripts that run Python tools from PyPI. `venv NAME TOOLS` installs TOOLS
# (pinned `name==version`, space-separated) once into a venv under
# ${XDG_CACHE_HOME:-~/.cache}/tideway-NAME, one installer at a time (tests run in parallel),
# and prints its path. Needs python3 with venv.
venv() {
  local name=$1 tools=$2
  local cache=${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/tideway-$name
  local dir
  dir=$cache/venv-$(printf '%s' "$tools" | sha256sum | cut -c1-12)
  mkdir -p "$cache"
  (
    flock 9
    if [ ! -f "$dir/.complete" ]; then
      echo "$name: installing $tools into $dir" >&2
      rm -rf "$dir"
      python3 -m venv "$dir" >&2
      # shellcheck disable=SC2086
      "$dir/bin/pip" install --quiet --disable-pip-version-check $tools >&2
      touch "$dir/.complete"
    fi
  ) 9>"$cache/lock"
  printf '%s\n' "$dir"
}

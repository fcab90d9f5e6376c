#!/usr/bin/env bash
# Installs what hostflame needs on a Debian 12 host, idempotently and quickly the second time.
#   install-deps.sh runtime   Debian packages to run hostflame (bcc, kernel headers) and the venv
#   install-deps.sh test      everything above plus the test and benchmark tools
#   install-deps.sh debs      only the runtime Debian packages (make install brings its own venv)
# Exit status: 0 done, 1 an install step failed (its output says which).
set -euo pipefail
mode=${1:-runtime}
here=$(cd "$(dirname "$0")/../.." && pwd)
venv="$here/.venv"
cache="$here/.cache"

runtime_debs=(python3-bpfcc python3-venv linux-headers-amd64 libdw1 libstdc++6 libllvm14)
test_debs=(bpfcc-tools linux-perf golang-go golang-github-google-pprof-dev binutils elfutils gcc g++
           podman runc busybox-static util-linux procps chromium chromium-driver)

need_debs() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
      echo "install-deps: missing Debian packages: ${missing[*]}; run as root (or prefix sudo)" >&2
      exit 1
    fi
    echo "install-deps: apt-get install ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

ensure_venv() {
  # bcc is built for Debian's /usr/bin/python3, so the venv must be made from it and see its site-packages.
  if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import bcc" 2>/dev/null; then
    rm -rf "$venv"
    /usr/bin/python3 -m venv --system-site-packages "$venv"
  fi
  local hash; hash=$(sha1sum < "$here/pyproject.toml" | cut -c1-12)
  local stamp="$venv/.hostflame-$1-$hash"
  # The test install is a superset of the runtime one.
  if [ ! -f "$stamp" ] && [ ! -f "$venv/.hostflame-test-$hash" ]; then
    "$venv/bin/pip" install -q --disable-pip-version-check -U pip >/dev/null 2>&1 || true
    local target="$here"
    [ "$1" = test ] && target="$here[test]"
    mkdir -p "$cache"
    echo "install-deps: pip install -e $target (log: $cache/pip.log)"
    if ! "$venv/bin/pip" install --disable-pip-version-check -e "$target" >"$cache/pip.log" 2>&1; then
      tail -20 "$cache/pip.log" >&2
      echo "install-deps: pip install failed; see $cache/pip.log" >&2
      exit 1
    fi
    rm -f "$venv"/.hostflame-*
    touch "$stamp"
  fi
}

build_pprof() {
  # Google's pprof, built offline from Debian's Go sources: the independent judge of our pprof files.
  if [ ! -x "$cache/bin/pprof" ]; then
    mkdir -p "$cache/bin" "$cache/go"
    GOPATH=/usr/share/gocode GO111MODULE=off GOCACHE="$cache/go" GOFLAGS=-mod=mod \
      go build -o "$cache/bin/pprof" github.com/google/pprof
  fi
}

speedscope_schema() {
  # speedscope's published file-format schema: the judge of our .speedscope.json files.
  # Node (with npm) is on the machine already; only the schema file of the package is used.
  local dir="$cache/speedscope" version=1.25.0
  if [ ! -f "$dir/node_modules/speedscope/dist/release/file-format-schema.json" ]; then
    mkdir -p "$dir"
    echo "install-deps: npm install speedscope@$version (schema only)"
    npm install --silent --no-audit --no-fund --ignore-scripts --prefix "$dir" "speedscope@$version" >/dev/null
  fi
}

case "$mode" in
  runtime) need_debs "${runtime_debs[@]}"; ensure_venv runtime ;;
  debs) need_debs "${runtime_debs[@]}" ;;
  test) need_debs "${runtime_debs[@]}" "${test_debs[@]}"; ensure_venv test; build_pprof; speedscope_schema ;;
  *) echo "usage: install-deps.sh runtime|test|debs" >&2; exit 2 ;;
esac

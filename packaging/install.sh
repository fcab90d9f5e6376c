#!/usr/bin/env bash
# `make install` / `make uninstall`: hostflame as a host service on Debian/Ubuntu, idempotently.
#   install.sh install     Debian packages (bcc, headers) when DESTDIR is empty, a venv with hostflame
#                          in $PREFIX/lib/hostflame, $PREFIX/bin/hostflame, the systemd unit and, when
#                          absent, /etc/hostflame/hostflame.toml (an existing config is never replaced)
#   install.sh uninstall   removes what install put there; the config only if unchanged; profiles
#                          in /var/lib/hostflame and caches in /var/cache/hostflame stay
# DESTDIR stages into another root (tests, packagers): nothing is started or reloaded then.
# Exit status: 0 done, 1 a step failed (its output says which), 2 usage.
set -euo pipefail
mode=${1:-}
here=$(cd "$(dirname "$0")/.." && pwd)
prefix=${PREFIX:-/usr/local}
dest=${DESTDIR:-}
libdir="$dest$prefix/lib/hostflame"
bin="$dest$prefix/bin/hostflame"
unit="$dest/etc/systemd/system/hostflame.service"
config="$dest/etc/hostflame/hostflame.toml"
example="$here/packaging/hostflame.example.toml"

live_systemd() { [ -z "$dest" ] && [ -d /run/systemd/system ]; }

need_root() {
  if [ -z "$dest" ] && [ "$(id -u)" -ne 0 ]; then
    echo "install: run as root (prefix sudo), or give DESTDIR to stage elsewhere" >&2
    exit 1
  fi
}

do_install() {
  need_root
  if [ -z "$dest" ]; then
    "$here/packaging/dev/install-deps.sh" debs
  fi
  # bcc is built for Debian's /usr/bin/python3: the venv sees its site-packages.
  if [ ! -x "$libdir/venv/bin/python" ] || ! "$libdir/venv/bin/python" -c "import sys" 2>/dev/null; then
    rm -rf "$libdir/venv"
    mkdir -p "$libdir"
    /usr/bin/python3 -m venv --system-site-packages "$libdir/venv"
  fi
  echo "install: hostflame into $libdir/venv"
  "$libdir/venv/bin/pip" install -q --disable-pip-version-check --no-warn-script-location "$here"
  mkdir -p "$(dirname "$bin")"
  ln -sfn "../lib/hostflame/venv/bin/hostflame" "$bin"
  mkdir -p "$(dirname "$unit")"
  sed "s|/usr/local/bin/hostflame|$prefix/bin/hostflame|" "$here/packaging/systemd/hostflame.service" > "$unit.tmp"
  chmod 644 "$unit.tmp" && mv "$unit.tmp" "$unit"
  mkdir -p "$(dirname "$config")"
  if [ ! -e "$config" ]; then
    install -m 600 "$example" "$config"
  else
    echo "install: keeping the existing $config"
  fi
  if live_systemd; then
    systemctl daemon-reload
    echo "install: done; start with: systemctl enable --now hostflame"
  else
    echo "install: done (systemd not running here: enable the unit where it is)"
  fi
}

do_uninstall() {
  need_root
  if live_systemd && systemctl list-unit-files hostflame.service >/dev/null 2>&1; then
    systemctl disable --now hostflame.service 2>/dev/null || true
  fi
  rm -f "$unit" "$bin"
  rm -rf "$libdir"
  if [ -e "$config" ]; then
    if cmp -s "$config" "$example"; then
      rm -f "$config"
      rmdir "$(dirname "$config")" 2>/dev/null || true
    else
      echo "uninstall: keeping $config (changed from the example); remove it yourself if unwanted"
    fi
  fi
  if live_systemd; then systemctl daemon-reload; fi
  echo "uninstall: done (profiles in /var/lib/hostflame and caches in /var/cache/hostflame are kept)"
}

case "$mode" in
  install) do_install ;;
  uninstall) do_uninstall ;;
  *) echo "usage: install.sh install|uninstall" >&2; exit 2 ;;
esac

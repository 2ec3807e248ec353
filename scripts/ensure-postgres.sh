#!/usr/bin/env bash
# PostgreSQL server binaries for the tests (tests/pgserver.py starts a private server from them):
# installs Debian's `postgresql` package when no /usr/lib/postgresql/*/bin has both initdb and
# postgres; does nothing otherwise. The package is kept from creating (and starting) its own
# `main` cluster on port 5432: the tests need the binaries only.
set -euo pipefail

CREATECLUSTER_CONF=/etc/postgresql-common/createcluster.conf

server_bindir() {
  local dir
  for dir in /usr/lib/postgresql/*/bin; do
    if [ -x "$dir/initdb" ] && [ -x "$dir/postgres" ]; then
      echo "$dir"
      return 0
    fi
  done
  return 1
}

if server_bindir >/dev/null; then
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "ensure-postgres: no PostgreSQL server under /usr/lib/postgresql/*/bin and apt-get is not available" >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || {
    echo "ensure-postgres: installing postgresql needs root (or sudo)" >&2
    exit 1
  }
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# postgresql-common first: it owns createcluster.conf, which the server package's postinst reads
# to decide whether to create and start a default cluster.
$SUDO apt-get install -y -qq --no-install-recommends postgresql-common >/dev/null
if grep -Eq '^[#[:space:]]*create_main_cluster' "$CREATECLUSTER_CONF"; then
  $SUDO sed -Ei 's/^[#[:space:]]*create_main_cluster.*$/create_main_cluster = false/' "$CREATECLUSTER_CONF"
else
  echo "create_main_cluster = false" | $SUDO tee -a "$CREATECLUSTER_CONF" >/dev/null
fi
$SUDO apt-get install -y -qq --no-install-recommends postgresql >/dev/null
if ! BINDIR="$(server_bindir)"; then
  echo "ensure-postgres: installed the postgresql package but no /usr/lib/postgresql/*/bin has initdb and postgres" >&2
  exit 1
fi
"$BINDIR/postgres" --version

#!/usr/bin/env bash
# Headless Chromium for the Dagster UI test (tests/pipelines/test_webserver_ui.py): installs
# Debian's `chromium` package when /usr/bin/chromium is missing; does nothing otherwise.
set -euo pipefail

CHROMIUM=/usr/bin/chromium

if [ -x "$CHROMIUM" ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "ensure-chromium: $CHROMIUM is missing and apt-get is not available" >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || {
    echo "ensure-chromium: installing chromium needs root (or sudo)" >&2
    exit 1
  }
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
if [ ! -x "$CHROMIUM" ]; then
  echo "ensure-chromium: installed the chromium package but $CHROMIUM is still missing" >&2
  exit 1
fi
"$CHROMIUM" --version

#!/usr/bin/env bash
# Headless Chromium + chromedriver for the dashboard test (tests/flows/test_dashboard.py); `make test` calls it through
# `make browser`, `make demo` never does (the demo needs no browser). From Debian packages, only where they are
# missing and apt-get exists and we may use it (root). Otherwise that test skips and says why.
set -euo pipefail
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ]; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; } \
      || echo "install: chromium install failed; tests/flows/test_dashboard.py will skip" >&2
  else
    echo "install: /usr/bin/chromium missing; run 'sudo apt-get install chromium chromium-driver' for the dashboard test" >&2
  fi
fi

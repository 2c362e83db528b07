#!/usr/bin/env bash
# Browser tests of the server's own pages (the dashboard) in Debian's
# headless Chromium: a reproducible install from package-lock.json, then the
# tests. Needs Node >= 20 with npm and the server binary (ARQONBUS_SERVER_BIN,
# default <repo>/target/debug/arqonbus-server); chromium and redis-server on
# PATH, or the tests that need them skip unless ARQONBUS_REQUIRE_BROWSER=1 /
# ARQONBUS_REQUIRE_REDIS=1 make them fail.
set -euo pipefail
cd "$(dirname "$0")"
npm ci --no-audit --no-fund
npm test

#!/usr/bin/env bash
# CI entry point of the TypeScript SDK: a reproducible install from
# package-lock.json, then the build and every test (unit, integration,
# browser). Needs: Node >= 20 with npm; the server binary (ARQONBUS_SERVER_BIN,
# default <repo>/target/debug/arqonbus-server); redis-server and chromium
# on PATH (or the tests that need them skip, unless ARQONBUS_REQUIRE_REDIS=1 /
# ARQONBUS_REQUIRE_BROWSER=1 make them fail).
set -euo pipefail
cd "$(dirname "$0")"
npm ci --no-audit --no-fund
npm test

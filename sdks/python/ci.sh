#!/usr/bin/env bash
# Python SDK check: creates .venv if missing, installs the package with its
# test and dev extras, type-checks it (mypy --strict), runs the tests.
#
# Environment:
#   ARQONBUS_SERVER_BIN     server binary the tests start
#                           (default: <repo>/target/debug/arqonbus-server)
#   ARQONBUS_REQUIRE_REDIS  1: fail, instead of skip, without redis-server
#   PYTHON                  interpreter for the venv (default: python3)
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")"

if [ ! -x .venv/bin/python ]; then
  "${PYTHON:-python3}" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'

echo "==> mypy --strict (sdks/python)"
.venv/bin/python -m mypy

echo "==> pytest (sdks/python)"
status=0
.venv/bin/python -m pytest "$@" || status=$?
if [ "$status" -eq 5 ]; then
  echo "ci.sh: pytest collected no tests" >&2
  exit 1
fi
exit "$status"

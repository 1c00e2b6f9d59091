#!/usr/bin/env bash
# Runs Matrixon's whole test suite: unit tests and the black-box integration tests.
#
# The integration tests start the real server against SQLite, and against PostgreSQL too when
# MATRIXON_TEST_POSTGRES_URL points at a server whose user may create databases (each test
# gets a fresh database). Without it, the PostgreSQL runs print "SKIPPED" and pass.
# Anything the tests need beyond cargo is installed here, pinned (nothing yet).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -n "${MATRIXON_TEST_POSTGRES_URL:-}" ]; then
  echo "PostgreSQL tests: on (${MATRIXON_TEST_POSTGRES_URL})"
else
  echo "PostgreSQL tests: SKIPPED (set MATRIXON_TEST_POSTGRES_URL=postgres://user@host:5432/db to run them)"
fi
exec cargo test --workspace --locked "$@"

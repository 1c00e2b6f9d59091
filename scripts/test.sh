#!/usr/bin/env bash
# Runs Matrixon's whole test suite: unit tests and the black-box integration tests.
#
# The integration tests start the real server against SQLite, and against PostgreSQL too when
# MATRIXON_TEST_POSTGRES_URL points at a server whose user may create databases (each test
# gets a fresh database). Without it, the PostgreSQL runs print "SKIPPED" and pass. Likewise
# MATRIXON_TEST_REDIS_URL turns on the tests that keep state in Redis.
# Anything the tests need beyond cargo is installed here, pinned: anvil (a local Ethereum
# node), solc-js, matrix-js-sdk and a Node 22 to run it, from the npm registry, into
# tools/node_modules (see tools/package.json); matrix-nio from PyPI into tools/venv;
# Synapse, the federation tests' peer, from PyPI into tools/synapse-venv; Sydent, the identity
# tests' identity server, from PyPI into tools/sydent-venv;
# and Debian's chromium + chromium-driver for the wallet page (MATRIXON_CHROMIUM and
# MATRIXON_CHROMEDRIVER point the tests at another browser and driver instead).
set -euo pipefail
cd "$(dirname "$0")/.."

stamp=tools/node_modules/.installed-from-lock
if ! cmp -s tools/package-lock.json "$stamp" 2>/dev/null; then
  echo "Installing pinned test tools (anvil, solc, matrix-js-sdk, Node 22) into tools/node_modules"
  npm ci --prefix tools --no-audit --no-fund --loglevel=error
  cp tools/package-lock.json "$stamp"
fi
# matrix-nio (and what it needs, each pinned) for the Python-bot scenario, in a virtualenv.
venv_stamp=tools/venv/.installed-from-requirements
if ! cmp -s tests/clients/requirements.txt "$venv_stamp" 2>/dev/null; then
  echo "Installing pinned matrix-nio into tools/venv"
  rm -rf tools/venv
  python3 -m venv tools/venv
  tools/venv/bin/pip install --quiet --disable-pip-version-check -r tests/clients/requirements.txt
  cp tests/clients/requirements.txt "$venv_stamp"
fi
# Synapse (and what it needs, each pinned), the federation tests' peer, in its own virtualenv.
synapse_stamp=tools/synapse-venv/.installed-from-requirements
if ! cmp -s tests/federation/synapse-requirements.txt "$synapse_stamp" 2>/dev/null; then
  echo "Installing pinned Synapse into tools/synapse-venv"
  rm -rf tools/synapse-venv
  python3 -m venv tools/synapse-venv
  tools/synapse-venv/bin/pip install --quiet --disable-pip-version-check \
    -r tests/federation/synapse-requirements.txt
  cp tests/federation/synapse-requirements.txt "$synapse_stamp"
fi
# Sydent (and what it needs, each pinned), the identity tests' identity server, likewise.
sydent_stamp=tools/sydent-venv/.installed-from-requirements
if ! cmp -s tests/identity/sydent-requirements.txt "$sydent_stamp" 2>/dev/null; then
  echo "Installing pinned Sydent into tools/sydent-venv"
  rm -rf tools/sydent-venv
  python3 -m venv tools/sydent-venv
  tools/sydent-venv/bin/pip install --quiet --disable-pip-version-check \
    -r tests/identity/sydent-requirements.txt
  cp tests/identity/sydent-requirements.txt "$sydent_stamp"
fi
export MATRIXON_ANVIL="${MATRIXON_ANVIL:-$PWD/tools/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil}"
"$MATRIXON_ANVIL" --version | head -n 1

# Headless Chromium and its WebDriver for the wallet-page tests, from Debian's archive, pinned.
chromium_version=150.0.7871.100-1~deb12u1
if [ -z "${MATRIXON_CHROMEDRIVER:-}" ] &&
  [ "$(dpkg-query -W -f='${Version}' chromium-driver 2>/dev/null)" != "$chromium_version" ]; then
  echo "Installing Debian's chromium and chromium-driver $chromium_version"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  packages=(chromium="$chromium_version" chromium-common="$chromium_version"
    chromium-driver="$chromium_version")
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get install -y -q --no-install-recommends "${packages[@]}" >/dev/null ||
    { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q --no-install-recommends "${packages[@]}" >/dev/null; }
fi
"${MATRIXON_CHROMEDRIVER:-chromedriver}" --version

# The committed contract artifacts must be what the pinned compiler makes of the sources.
fresh=$(mktemp -d)
trap 'rm -rf "$fresh"' EXIT
node contracts/build.js "$fresh" 2>/dev/null
if ! diff -r "$fresh" contracts/out >/dev/null; then
  echo "contracts/out is stale: run 'node contracts/build.js' and commit the result" >&2
  diff -r "$fresh" contracts/out >&2 || true
  exit 1
fi
echo "contracts/out matches a fresh compile"

if [ -n "${MATRIXON_TEST_POSTGRES_URL:-}" ]; then
  echo "PostgreSQL tests: on (${MATRIXON_TEST_POSTGRES_URL})"
else
  echo "PostgreSQL tests: SKIPPED (set MATRIXON_TEST_POSTGRES_URL=postgres://user@host:5432/db to run them)"
fi
if [ -n "${MATRIXON_TEST_REDIS_URL:-}" ]; then
  echo "Redis tests: on (${MATRIXON_TEST_REDIS_URL})"
else
  echo "Redis tests: SKIPPED (set MATRIXON_TEST_REDIS_URL=redis://host:6379/ to run them)"
fi
# The server binary first: some tests run it as a process (two instances, and tests/e2ee).
cargo build --locked -p matrixon --bin matrixon
cargo test --workspace --locked "$@"

# End-to-end encryption with matrix-sdk's crypto, against the server binary (tests/e2ee is
# its own workspace: see its Cargo.toml).
MATRIXON_BIN="$PWD/target/debug/matrixon" \
  cargo test --locked --manifest-path tests/e2ee/Cargo.toml --target-dir target

#!/usr/bin/env bash
# Runs the whole test suite: installs the test peers it needs if they are missing
# (SIPp from the sip-tester package), builds the workspace, runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

install_packages() {
    echo "==> installing $*"
    if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"; then
        as_root apt-get update
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"
    fi
}

if ! command -v sipp >/dev/null 2>&1; then
    install_packages sip-tester
fi
echo "==> $(sipp -v 2>/dev/null | grep -m1 SIPp || echo 'sipp present')"

echo "==> cargo build --workspace --all-targets"
cargo build --workspace --all-targets
echo "==> cargo test --workspace"
cargo test --workspace

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

# Test peers and independent checkers: SIPp (sip-tester), baresip, linphone, DTMF and FSK decoders, sox,
# xmllint, PostgreSQL, fail2ban-regex (checks the fail2ban filter in contrib/ against the gateway's real log).
missing=()
command -v sipp >/dev/null 2>&1 || missing+=(sip-tester)
command -v multimon-ng >/dev/null 2>&1 || missing+=(multimon-ng)
command -v minimodem >/dev/null 2>&1 || missing+=(minimodem)
command -v sox >/dev/null 2>&1 || missing+=(sox)
command -v fail2ban-regex >/dev/null 2>&1 || missing+=(fail2ban)
# xmllint: the BLF tests validate every NOTIFY body against RFC 4235's schema.
command -v xmllint >/dev/null 2>&1 || missing+=(libxml2-utils)
# The PostgreSQL server binaries: the store tests and tests/tests/postgres.rs and nodes.rs run a throwaway
# cluster of their own (initdb in a temporary directory; the package's own cluster is not used).
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
# openssl: the TLS tests make a test CA and certificates with it, and s_client is a TLS
# client independent of the gateway's rustls.
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
# baresip and linphone (its daemon): SIP phones over TLS with SRTP (tests/tests/tls.rs, srtp.rs).
command -v baresip >/dev/null 2>&1 || missing+=(baresip-core)
command -v linphone-daemon >/dev/null 2>&1 || missing+=(linphone-cli)
# promtool (Debian's prometheus) checks the metrics text; headless Chromium renders the
# status page (tests/tests/operations.rs).
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
# tshark decodes the SIP capture's pcap, sngrep unwraps its HEP3 (tests/tests/capture.rs).
command -v tshark >/dev/null 2>&1 || missing+=(tshark)
command -v sngrep >/dev/null 2>&1 || missing+=(sngrep)
# systemd-analyze verifies the unit file (tests/tests/service.rs).
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
# nft and ip: the packet-loss tests drop datagrams in a network namespace of their own.
command -v nft >/dev/null 2>&1 || missing+=(nftables)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
if [ ${#missing[@]} -gt 0 ]; then
    install_packages "${missing[@]}"
fi
echo "==> $(sipp -v 2>/dev/null | grep -m1 SIPp || echo 'sipp present')"

# The real DAHDI header, for the ABI test (installing dahdi-source would pull in
# module-assistant; downloading and unpacking it is enough).
header_dir="$PWD/target/dahdi-source"
if [ ! -f "$header_dir/usr/include/dahdi/user.h" ]; then
    echo "==> fetching dahdi/user.h from the dahdi-source package"
    mkdir -p "$header_dir"
    (cd "$header_dir" && { apt-get download dahdi-source || { as_root apt-get update && apt-get download dahdi-source; }; } \
        && dpkg -x dahdi-source_*.deb .)
fi
export DAHDI_INCLUDE="$header_dir/usr/include"

echo "==> cargo build --workspace --all-targets"
cargo build --workspace --all-targets
echo "==> cargo test --workspace"
cargo test --workspace
echo "==> the README's demo (scripts/demo.sh: an analog caller picked up by a SIP phone)"
DEMO_PROFILE=debug scripts/demo.sh
echo "==> the Debian package (scripts/package.sh on the debug build: installed into a throwaway root and checked)"
PACKAGE_PROFILE=dev scripts/package.sh
echo "==> fuzz smoke run (scripts/fuzz.sh: every cargo fuzz target for 10 s)"
scripts/fuzz.sh 10

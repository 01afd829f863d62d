#!/usr/bin/env bash
# Runs the benchmarks side by side with their peers and writes tables and SVG charts to
# target/bench-results/:
#   SIP:    call rate with zero failures (RFC 7501) vs Kamailio 5.6 and CPU per call
#           (sip-load), pickup latency with 10/100/1,000 calls ringing and across two nodes
#           sharing one PostgreSQL (sip-pickup), BLF NOTIFY latency (sip-blf), memory
#           per registration and per call (sip-memory), floods of unauthenticated requests
#           (sip-flood), overload at 3x the sustainable call rate (sip-overload), calls
#           and pickups completed at 10% packet loss each way (sip-loss, as root: a network
#           namespace with nft drops), memory per idle TLS connection vs Kamailio with
#           OpenSSL (tls-memory);
#   media:  SIP pre-parsing vs full parsers (sip-preparse), the RTP relay vs rtpengine 10.5
#           (rtp-relay), SRTP per packet at the analog ports (srtp-cost), the analog DSP
#           cost per channel.
# Installs kamailio (and its TLS module), sip-tester, nftables, iproute2 and
# rtpengine-daemon when missing.
# Usage: scripts/bench.sh [--sip | --media] [--quick]   (default: everything, full length)
set -euo pipefail
cd "$(dirname "$0")/.."

part=all
quick=()
for arg in "$@"; do
    case "$arg" in
        --sip) part=sip ;;
        --media) part=media ;;
        --quick) quick=(--quick) ;;
        *) echo "usage: $0 [--sip | --media] [--quick]" >&2; exit 2 ;;
    esac
done

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}
install_missing() { # command package
    if ! command -v "$1" >/dev/null 2>&1; then
        echo "==> installing $2"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$2" \
            || { as_root apt-get update && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$2"; }
    fi
}
if [ "$part" != media ]; then
    install_missing kamailio kamailio
    [ -e /usr/lib/x86_64-linux-gnu/kamailio/modules/tls.so ] \
        || { as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends kamailio-tls-modules \
            || { as_root apt-get update && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends kamailio-tls-modules; }; }
    install_missing sipp sip-tester
    install_missing nft nftables
    install_missing ip iproute2
    # sip-pickup's nodes part runs a throwaway PostgreSQL cluster (the server binaries).
    ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || install_missing initdb postgresql
    # The package may start a system kamailio on 5060; the benchmark runs its own.
    as_root systemctl stop kamailio 2>/dev/null || true
fi
if [ "$part" != sip ]; then
    install_missing rtpengine rtpengine-daemon
    # The package starts a system rtpengine; the benchmark runs its own.
    as_root systemctl stop rtpengine-daemon 2>/dev/null || true
fi

echo "==> building (release)"
cargo build --release -p bench --bins
cargo build --release -p gateway
if [ "$part" != media ]; then
    echo "==> SIP call rate, zero failed calls (RFC 7501), gateway vs Kamailio"
    target/release/sip-load "${quick[@]}"
    echo "==> pickup latency, 10 / 100 / 1,000 calls ringing; across two nodes on PostgreSQL"
    target/release/sip-pickup "${quick[@]}"
    echo "==> BLF: 200 phones watching 50 extensions, 180 to early NOTIFY, memory per subscription"
    target/release/sip-blf "${quick[@]}"
    echo "==> memory per registration and per call"
    target/release/sip-memory "${quick[@]}"
    echo "==> floods of unauthenticated requests: memory, replies"
    target/release/sip-flood "${quick[@]}"
    echo "==> overload: calls up and a probe while new calls arrive at 3x the sustainable rate"
    target/release/sip-overload "${quick[@]}"
    echo "==> calls and pickups completed at 10% packet loss each way"
    as_root target/release/sip-loss "${quick[@]}"
    echo "==> memory per idle TLS connection, gateway vs Kamailio with OpenSSL"
    target/release/tls-memory "${quick[@]}"
fi
if [ "$part" != sip ]; then
    echo "==> SIP pre-parsing"
    target/release/sip-preparse
    echo "==> RTP relay, 1,000 streams"
    target/release/rtp-relay "${quick[@]}"
    echo "==> SRTP per packet at the analog ports"
    target/release/srtp-cost
    echo "==> analog DSP per channel"
    cargo bench -p bench --bench dsp 2>/dev/null | grep -E "time:|channels" || true
fi
echo "==> results in target/bench-results/"

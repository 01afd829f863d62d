#!/usr/bin/env bash
# Runs the benchmarks side by side with their peers and writes tables and SVG charts to
# target/bench-results/: SIP pre-parsing (vs the full parser and rsip 0.4), the RTP relay
# (ours on io_uring and epoll vs rtpengine 10.5 userspace), the analog DSP cost.
# Installs rtpengine-daemon when missing. Pass --quick for a shorter RTP run.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}
if ! command -v rtpengine >/dev/null 2>&1; then
    echo "==> installing rtpengine-daemon"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends rtpengine-daemon \
        || { as_root apt-get update && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends rtpengine-daemon; }
fi
# The package starts a system rtpengine; the benchmark runs its own.
as_root systemctl stop rtpengine-daemon 2>/dev/null || true

cargo build --release -p bench --bins -p gateway
echo "==> SIP pre-parsing"
target/release/sip-preparse
echo "==> RTP relay, 1,000 streams"
target/release/rtp-relay "$@"
echo "==> SIP call rate (zero failed calls, RFC 7501)"
target/release/sip-load "$@"
echo "==> analog DSP per channel"
cargo bench -p bench --bench dsp 2>/dev/null | grep -E "time:|channels" || true
echo "==> results in target/bench-results/"

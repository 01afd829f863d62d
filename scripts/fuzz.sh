#!/usr/bin/env bash
# Runs every coverage-guided fuzz target (cargo fuzz / libFuzzer, fuzz/) for a bounded
# time each: `scripts/fuzz.sh` for the test suite's smoke run (10 s per target), or
# `scripts/fuzz.sh 3600` for an hour each; `scripts/fuzz.sh 600 engine` for one target.
# Installs cargo-fuzz from crates.io if missing. It runs on the stable toolchain (no
# sanitizer: `-s none`; the fuzzed code is safe Rust, so panics and assertion failures are
# what it finds). Crashes land in fuzz/artifacts/<target>/; the run fails if any.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-10}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(sip_roundtrip preparse engine sdp rtp relay_source callerid system_conf config blf_wire)
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "==> installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

# Seed corpora: the RFC 4475/5118 torture messages (and the inputs fuzzing found, fuzz/seeds/sip)
# for everything that reads SIP, the
# example configs for the TOML loader, and a few hand-written SDP/RTP/system.conf inputs.
seeds_for() {
    case "$1" in
        sip_roundtrip|preparse|engine) echo gateway/tests/fixtures/rfc4475 gateway/tests/fixtures/rfc5118 fuzz/seeds/sip ;;
        config) echo examples ;;
        sdp|rtp|system_conf|blf_wire) echo "fuzz/seeds/$1" ;;
        *) echo "" ;;
    esac
}

cd fuzz
echo "==> cargo fuzz build (release, coverage instrumented)"
cargo fuzz build -s none
for target in "${targets[@]}"; do
    echo "==> fuzzing $target for ${seconds}s"
    mkdir -p "corpus/$target"
    # shellcheck disable=SC2046
    cargo fuzz run -s none "$target" "corpus/$target" $(for d in $(seeds_for "$target"); do echo "../$d"; done) \
        -- -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1 2>&1 \
        | grep -E '^(Done|stat::number_of_executed_units|==|INFO: seed corpus)|panicked|SUMMARY|crash-|Test unit written' || true
    if compgen -G "artifacts/$target/crash-*" >/dev/null; then
        echo "fuzz target $target crashed: see fuzz/artifacts/$target/" >&2
        exit 1
    fi
done

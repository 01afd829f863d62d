#!/usr/bin/env bash
# Demo mode on one machine: the analog phone 101 (emulated card) calls SIP phone 201, which
# rings; SIP phone 202 picks the call up with *8 (183 dummy dialog, INVITE with Replaces); 101
# then talks to 202. SIPp plays the two SIP phones, `gateway analog` the analog phone.
# Uses examples/office.toml (127.0.0.1:5060, database and operator socket under ./data/).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v sipp >/dev/null; then
    echo "== installing SIPp (package sip-tester)"
    ${SUDO:-$( [ "$(id -u)" = 0 ] || echo sudo )} apt-get install -y sip-tester >/dev/null
fi
# DEMO_PROFILE=debug reuses the test suite's build (scripts/test.sh runs this demo).
profile=${DEMO_PROFILE:-release}
if [ "$profile" = release ]; then cargo build --release -p gateway; else cargo build -p gateway; fi
gateway=target/$profile/gateway
config=examples/office.toml
work=$(mktemp -d)
say() { printf '\n== %s\n' "$*"; }
analog() { echo "\$ gateway analog $*"; "$gateway" analog --config "$config" "$@" | sed 's/^/    /'; }

# The test scenarios are templates: fill in what the tests would.
for scenario in register uas_ring_picked uac_pickup uas_replaces; do
    sed -e 's/@EXPECT@/200/; s/@MEDIA_PORT@/[media_port]/; s/@HOLD_MS@/300/' \
        -e 's/@PICKED_CALL_MS@/4000/; s/@CALLER_ID@/\&quot;Analog 101\&quot; \&lt;sip:101@/' \
        "tests/scenarios/$scenario.xml" > "$work/$scenario.xml"
done
sipp_run() { sipp -i 127.0.0.1 -m 1 -nostdin -timeout 30s -timeout_error "$@" 127.0.0.1:5060 >/dev/null 2>&1; }

say "starting the gateway (demo mode: no /dev/dahdi, so the emulated card)"
"$gateway" --config "$config" > "$work/gateway.log" 2>&1 &
gateway_pid=$!
cleanup() { kill "$gateway_pid" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT
for _ in $(seq 100); do grep -q "demo mode" "$work/gateway.log" && break; sleep 0.1; done
grep "demo mode" "$work/gateway.log"

say "SIP phone 201 registers and waits for calls (SIPp on port 5071)"
sipp_run -sf "$work/register.xml" -p 5071 -s 201 -au 201 -ap pw201 -key expires 600
sipp_run -sf "$work/uas_ring_picked.xml" -p 5071 &
callee=$!

say "analog phone 101 lifts the handset and dials 201"
analog lift 1
sleep 0.5
analog dial 1 201
sleep 2
say "201 rings; what the analog caller hears (US ringback is 440+480 Hz):"
analog listen 1

say "SIP phone 202 dials *8: the gateway hands it the call with INVITE + Replaces"
sipp_run -sf "$work/uac_pickup.xml" -oocsf "$work/uas_replaces.xml" -callid_slash_ign \
    -p 5072 -s '*8' -au 202 -ap pw202 -auth_uri '*8@127.0.0.1:5060' -key caller 202 &
picker=$!
for _ in $(seq 100); do grep -q "analog port 1: call answered" "$work/gateway.log" && break; sleep 0.1; done
grep -E "claimed|Replaces|analog port 1: call answered" "$work/gateway.log" | sed 's/^[^ ]* *//'

say "101 speaks a 1004 Hz tone into the handset; the gateway sends it to 202 as RTP"
analog say 1 1004 1000
analog status 1
sleep 1
say "101 hangs up: the gateway sends BYE to 202"
analog hangup 1
wait "$picker" "$callee" || true
sleep 0.5
say "the call detail record (202 answered and is billed)"
"$gateway" cdr --config "$config" --limit 1 | tee "$work/cdr"
if ! grep -Eq '101 +201 +202 +group +202 +answered' "$work/cdr"; then
    echo "the demo did not end with 202 answering the call; the gateway's log:" >&2
    cat "$work/gateway.log" >&2
    exit 1
fi

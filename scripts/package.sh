#!/usr/bin/env bash
# Builds the Debian package (cargo deb -p gateway) and installs it into a throwaway root
# with `dpkg --root`: the files land where README says, the postinst makes the gateway's
# user and state directory there, the default config loads, the installed binary answers
# --version, and the package removes cleanly. Prints the package's path last.
# PACKAGE_PROFILE=dev packages the debug binary the test suite built (the check of the
# packaging, without a release build); the default is the release build to ship.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${PACKAGE_PROFILE:-release}

command -v cargo-deb >/dev/null 2>&1 || cargo install cargo-deb --locked
echo "==> cargo deb -p gateway --profile $profile"
rm -f target/debian/pots-gateway_*.deb
if [ "$profile" = dev ]; then
    # The binary the suite built; cargo deb's own build would compile it again.
    cargo build -p gateway
    cargo deb -p gateway --profile dev --no-build --output target/debian >/dev/null
else
    cargo deb -p gateway --profile "$profile" --output target/debian >/dev/null
fi
deb=$(ls -t target/debian/pots-gateway_*.deb | head -1)
echo "==> built $deb"
dpkg-deb --info "$deb" | sed -n '/Package:/,/Description:/p'

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates" "$root/etc"
touch "$root/var/lib/dpkg/status"
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/etc/passwd"
printf 'root:x:0:\ndialout:x:20:\n' >"$root/etc/group"

echo "==> dpkg --root $root -i $deb"
# --force-depends: the throwaway root holds no libc; --force-script-chrootless: the
# maintainer scripts run here with DPKG_ROOT set (they honour it).
dpkg --root="$root" --force-depends --force-script-chrootless -i "$deb"

fail() { echo "package check failed: $*" >&2; exit 1; }
binary="$root/usr/bin/pots-gateway"
[ -x "$binary" ] || fail "no /usr/bin/pots-gateway"
version=$("$binary" --version)
echo "==> installed binary: $version"
[ "$version" = "gateway $(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)" ] || fail "--version says $version"
unit=$(find "$root" -type f -name pots-gateway.service -path '*systemd/system*' | head -1)
[ -n "$unit" ] || fail "no unit file"
grep -q '^Type=notify$' "$unit" || fail "the unit is not the package's"
for file in etc/pots-gateway/gateway.toml etc/fail2ban/filter.d/pots-gateway.conf \
    etc/fail2ban/jail.d/pots-gateway.conf usr/lib/sysusers.d/pots-gateway.conf \
    usr/share/doc/pots-gateway/README.md; do
    [ -f "$root/$file" ] || fail "no /$file"
done
grep -q '^pots-gateway:' "$root/etc/passwd" || fail "postinst made no user"
grep -q '^dialout:.*pots-gateway' "$root/etc/group" || fail "the user is not in dialout (/dev/dahdi)"
[ "$(stat -c %a "$root/var/lib/pots-gateway")" = 750 ] || fail "state directory mode"
[ "$(stat -c %a "$root/etc/pots-gateway/gateway.toml")" = 640 ] || fail "config mode"
uid=$(awk -F: '$1 == "pots-gateway" { print $3 }' "$root/etc/passwd")
[ "$(stat -c %u "$root/var/lib/pots-gateway")" = "$uid" ] || fail "state directory owner"
grep -qx '/etc/pots-gateway/gateway.toml' "$root/var/lib/dpkg/info/pots-gateway.conffiles" \
    || fail "the config is no conffile (an upgrade would overwrite the operator's edits)"

# The default config loads: migrate a database in the throwaway root with it.
sed "s|/var/lib/pots-gateway/|$root/var/lib/pots-gateway/|" "$root/etc/pots-gateway/gateway.toml" >"$root/check.toml"
"$binary" --config "$root/check.toml" migrate | grep -q "schema migrated" || fail "the default config does not load"

echo "==> dpkg --root $root --purge pots-gateway"
dpkg --root="$root" --force-depends --force-script-chrootless --purge pots-gateway
[ ! -e "$binary" ] || fail "the binary stayed after purge"
echo "==> package ok: $deb"

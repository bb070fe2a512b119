#!/usr/bin/env bash
# The Debian package as CPack builds it (ami-engine_<version>_amd64.deb):
# its control fields and maintainer scripts, its files, and the package
# unpacked into a scratch root (dpkg -x: nothing on this machine changes)
# and run from there: --version finds the installed lua/ modules,
# --check-config accepts the shipped /etc config, and the installed engine
# runs a script that requires those modules against the installed ami-sim.
source "$(dirname "$0")/lib.sh"

arch=$(dpkg --print-architecture)
cpack --config "$AMI_BUILD_DIR/CPackConfig.cmake" -B "$scratch/out" >"$scratch/cpack.log" 2>&1 \
  || { cat "$scratch/cpack.log" >&2; fail "cpack"; }
deb=$scratch/out/ami-engine_${AMI_VERSION}_${arch}.deb
[ -f "$deb" ] || { ls "$scratch/out" >&2; fail "no $(basename "$deb")"; }
pass "built $(basename "$deb")"

field() { dpkg-deb -f "$deb" "$1"; }
[ "$(field Package)" = ami-engine ] || fail "Package: $(field Package)"
[ "$(field Version)" = "$AMI_VERSION" ] || fail "Version: $(field Version)"
for dep in libev4 libluajit-5.1-2 libssl3 libcurl4 libhiredis0.14 lua-cjson adduser; do
  field Depends | tr ',' '\n' | sed 's/^ *//; s/ .*//' | grep -qx "$dep" || fail "Depends lacks $dep: $(field Depends)"
done
dpkg-deb -e "$deb" "$scratch/control"
grep -qx /etc/ami-engine/engine.lua "$scratch/control/conffiles" || fail "engine.lua is not a conffile"
for s in postinst prerm postrm; do
  [ -x "$scratch/control/$s" ] || fail "no executable $s"
  sh -n "$scratch/control/$s" || fail "$s: syntax"
done
grep -q 'adduser --system' "$scratch/control/postinst" || fail "postinst makes no system user"
pass "control: Depends $(field Depends); conffiles; maintainer scripts"

root=$scratch/root
dpkg -x "$deb" "$root"
for f in usr/bin/ami-engine usr/bin/ami-sim usr/lib/libami.a usr/include/ami/client.h \
         usr/lib/pkgconfig/ami-engine.pc usr/share/ami-engine/lua/causes.lua \
         usr/share/ami-engine/scripts/hangup_causes.lua usr/share/doc/ami-engine/operations.md \
         lib/systemd/system/ami-engine.service etc/ami-engine/engine.lua; do
  # merged /usr: lib/systemd may be shipped under usr/lib/systemd
  [ -e "$root/$f" ] || [ -e "$root/usr/$f" ] || fail "not in the package: /$f"
done
[ -d "$root/etc/ami-engine/scripts" ] || fail "no /etc/ami-engine/scripts"
soname=$(readelf -d "$root"/usr/lib/libami.so | sed -n 's/.*SONAME.*\[\(.*\)\]/\1/p')
[ -e "$root/usr/lib/$soname" ] || fail "no /usr/lib/$soname"
grep -qx 'prefix=/usr' "$root/usr/lib/pkgconfig/ami-engine.pc" || fail "pc prefix is not /usr"
unit=$root/lib/systemd/system/ami-engine.service
[ -e "$unit" ] || unit=$root/usr/lib/systemd/system/ami-engine.service
for line in Type=notify WatchdogSec=10 User=ami-engine NoNewPrivileges=true ProtectSystem=strict \
            "ExecStart=/usr/bin/ami-engine -c /etc/ami-engine/engine.lua" \
            "EnvironmentFile=-/etc/ami-engine/secrets.env" "ReadOnlyPaths=/etc/ami-engine"; do
  grep -qx "$line" "$unit" || fail "unit lacks $line"
done
pass "files: binaries, $soname, headers, pc (prefix /usr), lua modules, scripts, docs, unit, /etc config"

engine=$root/usr/bin/ami-engine
unset AMI_ENGINE_LUA_DIR
version=$("$engine" --version)
[ "$version" = "ami-engine $AMI_VERSION (lua modules: $root/usr/share/ami-engine/lua)" ] \
  || fail "--version: $version"
"$root/usr/bin/ami-sim" --version | grep -q "^ami-sim $AMI_VERSION" || fail "ami-sim --version"
AMI_SECRET=from-secrets-env "$engine" --check-config -c "$root/etc/ami-engine/engine.lua" >"$scratch/check.out" \
  || { cat "$scratch/check.out" >&2; fail "--check-config on the shipped config"; }
grep -q "secret from env AMI_SECRET" "$scratch/check.out" || fail "--check-config summary"
pass "$version; --check-config accepts /etc/ami-engine/engine.lua"

# A short real run of the unpacked engine: a script that needs the installed
# modules, against the unpacked simulator. Loading fails at start (exit 1) if
# a require cannot find its module.
start_sim "$root/usr/bin/ami-sim" --cps 5
mkdir -p "$scratch/run/scripts"
cat >"$scratch/run/scripts/probe.lua" <<'LUA'
local ami = require "ami"
local causes = require "causes"
local hours = require "hours"
assert(type(causes) == "table" and type(hours) == "table")
ami.on("Newchannel", function(ev) ami.log.info("probe saw a channel", {server = ev.server}) end)
LUA
cat >"$scratch/run/engine.lua" <<LUA
servers = { { key = "pbx1", host = "127.0.0.1", port = $sim_port, username = "engine", secret = "s3cret" } }
metrics = { listen = false }
LUA
timeout 30 "$engine" -c "$scratch/run/engine.lua" --duration 2 >"$scratch/run.out" 2>&1 \
  || { cat "$scratch/run.out" >&2; fail "the unpacked engine did not run its script"; }
grep -q 'probe saw a channel' "$scratch/run.out" || { cat "$scratch/run.out" >&2; fail "no event reached the script"; }
pass "the unpacked engine ran a script using the installed lua/ modules against the unpacked ami-sim"

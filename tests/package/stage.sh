#!/usr/bin/env bash
# Install the build into the build tree (cmake --install --prefix), as an
# embedder or a packager would; the other package tests use what it put there.
source "$(dirname "$0")/lib.sh"

rm -rf "$AMI_STAGE"
cmake --install "$AMI_BUILD_DIR" --prefix "$AMI_STAGE" >"$scratch/install.log" \
  || { cat "$scratch/install.log" >&2; fail "cmake --install"; }
for f in bin/ami-engine bin/ami-sim lib/libami.a lib/libami.so lib/pkgconfig/ami-engine.pc \
         include/ami/ami.h include/ami/version.h share/ami-engine/lua/causes.lua \
         share/ami-engine/scripts/hangup_causes.lua share/ami-engine/examples/embed.c \
         share/ami-engine/examples/demo/engine.lua share/doc/ami-engine/operations.md \
         lib/systemd/system/ami-engine.service etc/ami-engine/engine.lua; do
  [ -e "$AMI_STAGE/$f" ] || fail "not installed: $f"
done
[ -d "$AMI_STAGE/etc/ami-engine/scripts" ] || fail "no etc/ami-engine/scripts folder"
pass "installed into $AMI_STAGE"

# Files made at install time name the prefix installed to, not the configured one.
grep -qx "prefix=$AMI_STAGE" "$AMI_STAGE/lib/pkgconfig/ami-engine.pc" || fail "pc file prefix"
grep -qx "ExecStart=$AMI_STAGE/bin/ami-engine -c $AMI_STAGE/etc/ami-engine/engine.lua" \
  "$AMI_STAGE/lib/systemd/system/ami-engine.service" || fail "unit ExecStart"
soname=$(readelf -d "$AMI_STAGE/lib/libami.so" | sed -n 's/.*SONAME.*\[\(.*\)\]/\1/p')
case "$AMI_VERSION" in
  0.*) want="libami.so.0.$(echo "$AMI_VERSION" | cut -d. -f2)" ;;
  *) want="libami.so.${AMI_VERSION%%.*}" ;;
esac
[ "$soname" = "$want" ] || fail "SONAME $soname, want $want"
[ -e "$AMI_STAGE/lib/$soname" ] || fail "no $soname link"
[ -e "$AMI_STAGE/lib/libami.so.$AMI_VERSION" ] || fail "no libami.so.$AMI_VERSION"
pass "pkg-config file, unit and SONAME ($soname) name the installed paths"

#!/usr/bin/env bash
# The example embedder (docs/examples/embed.c) built against the installed
# library with pkg-config, as its header says, and run against the installed
# ami-sim: driven by its own libev loop (ev_run), then by ami_client_poll.
# Then a program whose own functions share names with libami's internals,
# linked against the shared library and against the static archive.
source "$(dirname "$0")/lib.sh"

cc=${AMI_CC:-cc}
export PKG_CONFIG_PATH=$AMI_STAGE/lib/pkgconfig
pkg-config --exists ami-engine || fail "pkg-config does not find ami-engine in $PKG_CONFIG_PATH"
[ "$(pkg-config --modversion ami-engine)" = "$AMI_VERSION" ] || fail "pkg-config version"
read -r -a flags <<<"$(pkg-config --cflags --libs ami-engine)"
# What libami.a needs besides itself, for a static link.
read -r -a static_libs <<<"$(pkg-config --static --libs-only-l ami-engine | sed 's/-lami\b//')"
read -r -a extra <<<"${AMI_EMBED_CFLAGS:-}"
rpath=-Wl,-rpath,$AMI_STAGE/lib

"$cc" -std=c11 -Wall -Wextra -Werror "${extra[@]}" -o "$scratch/embed" \
  "$AMI_STAGE/share/ami-engine/examples/embed.c" "${flags[@]}" -lev "$rpath" \
  || fail "embed.c does not build with pkg-config --cflags --libs ami-engine"
# grep reads all of ldd's output: with -q it would stop at the match, and ldd,
# still writing, would die of SIGPIPE and fail the pipeline (pipefail).
ldd "$scratch/embed" | grep "$AMI_STAGE/lib/libami.so" >/dev/null || fail "embed does not use the installed libami.so"
pass "embed.c built with $(pkg-config --cflags --libs ami-engine) -lev"

start_sim "$AMI_STAGE/bin/ami-sim" --cps 20
for mode in "" --poll; do
  out=$scratch/embed${mode}.out
  rc=0
  timeout 30 "$scratch/embed" --port "$sim_port" --seconds 2 $mode >"$out" 2>&1 || rc=$?
  [ "$rc" = 0 ] || { cat "$out" >&2; fail "embed ${mode:-(ev_run)} exited $rc (124: did not stop in 30 s)"; }
  for want in "authenticating -> connected" "action CoreShowChannels: done" "event Newchannel on pbx1" \
              "connected -> stopped" "summary: logged_in=yes"; do
    grep -q "$want" "$out" || { cat "$out" >&2; fail "embed ${mode:-(ev_run)}: no \"$want\""; }
  done
  pass "embed ${mode:-(ev_run)}: $(grep summary: "$out")"
done

src=$(dirname "$0")/clash.c
"$cc" -std=c11 -Wall -Wextra -Werror "${extra[@]}" -o "$scratch/clash-shared" "$src" "${flags[@]}" "$rpath" \
  || fail "clash.c does not link against libami.so"
"$scratch/clash-shared" || fail "clash.c against libami.so"
"$cc" -std=c11 -Wall -Wextra -Werror "${extra[@]}" -o "$scratch/clash-static" "$src" \
  -I"$AMI_STAGE/include" "$AMI_STAGE/lib/libami.a" "${static_libs[@]}" \
  || fail "clash.c does not link against libami.a (an internal name clashed)"
"$scratch/clash-static" || fail "clash.c against libami.a"
pass "a program's own registry_table_find and http_client_new live beside libami, shared and static"

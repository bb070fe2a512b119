#!/usr/bin/env bash
# Only the public API leaves the library: every global symbol the shared
# library exports, and every global symbol of the installed static archive,
# is a function declared AMI_API in include/ami/, and each of those is there.
# The installed headers compile on their own (C99 and C++), needing nothing
# but each other and the C library: nothing internal leaks through them.
source "$(dirname "$0")/lib.sh"

inc=$AMI_STAGE/include
# The public functions: "AMI_API <type> name(" in the installed headers.
grep -h '^AMI_API ' "$inc"/ami/*.h | sed -E 's/^[^(]*[ *]([A-Za-z_][A-Za-z0-9_]*)\(.*/\1/' \
  | sort -u >"$scratch/declared"
[ "$(wc -l <"$scratch/declared")" -ge 50 ] || fail "found only $(wc -l <"$scratch/declared") AMI_API declarations"

# check_exports WHAT NM-OUTPUT: the defined global symbols must be exactly
# the declared functions, each a text (T) symbol.
check_exports() {
  local what=$1 list=$2
  # nm prints "addr type name"; sanitizer runtimes add their own
  # instrumentation symbols to a sanitized build, which are not ours.
  awk 'NF == 3 {print $2, $3}' "$list" | grep -v -E ' (__asan|__ubsan|__sanitizer|__odr_asan)' \
    | sort -u >"$scratch/$what.typed" || true
  awk '$1 != "T" {print "  " $1 " " $2}' "$scratch/$what.typed" >"$scratch/$what.nontext"
  [ ! -s "$scratch/$what.nontext" ] || { cat "$scratch/$what.nontext" >&2; fail "$what exports symbols that are not functions"; }
  awk '{print $2}' "$scratch/$what.typed" | sort -u >"$scratch/$what.names"
  if ! diff -u "$scratch/declared" "$scratch/$what.names" >"$scratch/$what.diff"; then
    sed -n '3,$p' "$scratch/$what.diff" | grep '^[-+]' | sed 's/^-/  declared, not exported: /; s/^+/  exported, not public: /' >&2
    fail "$what: its global symbols are not the public API"
  fi
  pass "$what exports the $(wc -l <"$scratch/declared") public functions and nothing else"
}

nm -D --defined-only "$AMI_STAGE/lib/libami.so" >"$scratch/so.nm"
check_exports libami.so "$scratch/so.nm"
nm -g --defined-only "$AMI_STAGE/lib/libami.a" >"$scratch/a.nm"
check_exports libami.a "$scratch/a.nm"

# Each header alone, with only the installed include folder.
cc=${AMI_CC:-cc}
for h in "$inc"/ami/*.h; do
  name=ami/$(basename "$h")
  printf '#include <%s>\nextern int after_the_header;\n' "$name" >"$scratch/one.c"
  "$cc" -std=c99 -Wall -Wextra -Wpedantic -Werror -fsyntax-only -I"$inc" "$scratch/one.c" \
    || fail "<$name> does not compile on its own"
  if command -v c++ >/dev/null; then
    cp "$scratch/one.c" "$scratch/one.cc"
    c++ -std=c++11 -Wall -Wextra -Werror -fsyntax-only -I"$inc" "$scratch/one.cc" \
      || fail "<$name> does not compile as C++"
  fi
done
pass "every installed header compiles on its own, as C99 and as C++"

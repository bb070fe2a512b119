#!/usr/bin/env python3
"""Coverage gate: per-file line and branch coverage, module floors, and the
marked regions of seed logic (tests/coverage/thresholds.txt).

    check.py --json coverage.json --root SOURCE_DIR [--thresholds FILE]

Reads gcovr's JSON (gcovr --json), prints a table of every engine/ file
(lines and branches, covered/total and %), then each module and region
against its floor with the uncovered line numbers, and exits 1 when any
floor is missed or a region's markers are missing, unbalanced, unlisted or
shrunk. Exit 2: the inputs themselves are unusable.
"""
import argparse
import json
import os
import re
import sys

BEGIN = re.compile(r"coverage-begin:\s*([\w.-]+)")
END = re.compile(r"coverage-end:\s*([\w.-]+)")


def die(msg):
    print(f"coverage: {msg}", file=sys.stderr)
    sys.exit(2)


def read_thresholds(path):
    modules, regions = [], {}
    with open(path) as f:
        for n, raw in enumerate(f, 1):
            line = raw.split("#", 1)[0].split()
            if not line:
                continue
            try:
                if line[0] == "module" and len(line) == 3:
                    modules.append((line[1].rstrip("/"), float(line[2])))
                elif line[0] == "region" and len(line) == 4:
                    regions[line[1]] = (float(line[2]), int(line[3]))
                else:
                    raise ValueError
            except ValueError:
                die(f"{path}:{n}: expected 'module DIR PCT' or 'region NAME PCT MIN_LINES'")
    return modules, regions


def load_gcovr(path):
    """{relative file: {line: (count, branches_total, branches_taken)}} for executable lines."""
    with open(path) as f:
        data = json.load(f)
    files = {}
    for entry in data.get("files", []):
        lines = files.setdefault(os.path.normpath(entry["file"]), {})
        for ln in entry.get("lines", []):
            if ln.get("gcovr/noncode"):
                continue
            br = ln.get("branches", [])
            n = ln["line_number"]
            count, bt, bk = lines.get(n, (0, 0, 0))
            # a line compiled into two objects (bench_parse's own parser) is merged
            lines[n] = (count + ln["count"], max(bt, len(br)),
                        max(bk, sum(1 for b in br if b.get("count", 0) > 0)))
    return files


def find_regions(root):
    """{name: [(file, first_line, last_line)]}, and a list of marker errors."""
    regions, errors = {}, []
    for base, _, names in os.walk(os.path.join(root, "engine")):
        for name in sorted(names):
            if not name.endswith((".c", ".h")):
                continue
            full = os.path.join(base, name)
            rel = os.path.relpath(full, root)
            open_at = {}
            with open(full, errors="replace") as f:
                for n, text in enumerate(f, 1):
                    b, e = BEGIN.search(text), END.search(text)
                    if b:
                        if open_at:
                            errors.append(f"{rel}:{n}: coverage-begin {b.group(1)} inside "
                                          f"{next(iter(open_at))} (regions do not nest)")
                        open_at[b.group(1)] = n
                    elif e:
                        start = open_at.pop(e.group(1), None)
                        if start is None:
                            errors.append(f"{rel}:{n}: coverage-end {e.group(1)} without its begin")
                        else:
                            regions.setdefault(e.group(1), []).append((rel, start, n))
            for name_, start in open_at.items():
                errors.append(f"{rel}:{start}: coverage-begin {name_} is never ended")
    return regions, errors


def pct(a, b):
    return 100.0 * a / b if b else 100.0


def summarize(lines):
    total = len(lines)
    hit = sum(1 for c, _, _ in lines.values() if c > 0)
    bt = sum(t for _, t, _ in lines.values())
    bk = sum(k for _, _, k in lines.values())
    return hit, total, bk, bt


def compact(nums):
    """[3, 4, 5, 9] -> '3-5, 9'"""
    out, run = [], []
    for n in sorted(nums):
        if run and n == run[-1] + 1:
            run.append(n)
            continue
        if run:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [n]
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ", ".join(out)


def print_files(files):
    print(f"{'file':44} {'lines':>15} {'branches':>15}")
    for rel in sorted(f for f in files if f.startswith("engine/")):
        hit, total, bk, bt = summarize(files[rel])
        print(f"{rel:44} {hit:5}/{total:<5}{pct(hit, total):5.1f}% {bk:5}/{bt:<5}{pct(bk, bt):5.1f}%")


def check_modules(files, modules):
    failed = False
    print("\nmodules (lines of every file of the folder, together)")
    for folder, floor in modules:
        sel = {f: l for f, l in files.items() if os.path.dirname(f) == folder}
        if not sel:
            print(f"  FAIL {folder}: no coverage data (not built, or no test ran it)")
            failed = True
            continue
        hit = sum(summarize(l)[0] for l in sel.values())
        total = sum(summarize(l)[1] for l in sel.values())
        ok = pct(hit, total) >= floor
        failed |= not ok
        print(f"  {'ok  ' if ok else 'FAIL'} {folder:24} {pct(hit, total):5.1f}% of {total} lines "
              f"(floor {floor:g}%)")
    return failed


def check_regions(files, regions, wanted, marker_errors):
    failed = bool(marker_errors)
    print("\nregions (marked seed logic)")
    for err in marker_errors:
        print(f"  FAIL {err}")
    for name in sorted(set(regions) - set(wanted)):
        print(f"  FAIL {name}: marked in the code but not listed in the thresholds")
        failed = True
    for name, (floor, min_lines) in sorted(wanted.items()):
        places = regions.get(name)
        if not places:
            print(f"  FAIL {name}: no coverage-begin/end markers found in engine/")
            failed = True
            continue
        hit = total = 0
        missed = []
        for rel, first, last in places:
            lines = files.get(rel)
            if lines is None:
                print(f"  FAIL {name}: {rel} has no coverage data")
                failed = True
                continue
            for n, (count, _, _) in lines.items():
                if first < n < last:
                    total += 1
                    hit += count > 0
                    if count == 0:
                        missed.append((rel, n))
        ok = pct(hit, total) >= floor and total >= min_lines
        failed |= not ok
        print(f"  {'ok  ' if ok else 'FAIL'} {name:10} {hit}/{total} lines ({pct(hit, total):.1f}%, "
              f"floor {floor:g}%) in {len(places)} places")
        if total < min_lines:
            print(f"       the region holds {total} executable lines, fewer than the {min_lines} "
                  f"it held when measured: markers moved? (update the threshold deliberately)")
        by_file = {}
        for rel, n in missed:
            by_file.setdefault(rel, []).append(n)
        for rel, nums in sorted(by_file.items()):
            print(f"       never run: {rel}: {compact(nums)}")
    return failed


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", required=True, help="gcovr --json output")
    ap.add_argument("--root", required=True, help="the source tree")
    ap.add_argument("--thresholds", help="default: tests/coverage/thresholds.txt under --root")
    a = ap.parse_args()
    thresholds = a.thresholds or os.path.join(a.root, "tests/coverage/thresholds.txt")
    modules, wanted = read_thresholds(thresholds)
    files = load_gcovr(a.json)
    if not files:
        die(f"{a.json} holds no files: did the tests run in a --coverage build?")
    regions, marker_errors = find_regions(a.root)
    print_files(files)
    failed = check_modules(files, modules)
    failed |= check_regions(files, regions, wanted, marker_errors)
    print("\ncoverage: " + ("FAIL: below a floor (see above)" if failed else "every floor met"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

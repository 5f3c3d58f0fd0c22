#!/usr/bin/env python3
"""Compare a SyTest run with the pass list kept in the repository.

    sytest_check.py OUTDIR PASSING [--exclusions FILE] [--racy FILE] [--update]

OUTDIR is what ``../shared/sytest/run OUTDIR`` wrote (``results.tap``). PASSING
lists the tests that must pass, one name per line (lines starting with ``#`` are comments), like
Dendrite's ``sytest-whitelist``. Exit status 1 when a listed test did not pass
(failed, skipped or did not run at all); tests that passed but are not listed
are reported so they can be added, and ``--update`` adds them (the list only
grows). Tests in the exclusion file are never required, and are counted.
Tests in the racy file pass or fail by timing the server does not control (the
file says why for each): they are reported, never required, and ``--update``
does not add them.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path


def read_names(path: Path) -> list[str]:
    """The test names of a list file: one per line; lines starting with ``#`` are comments.

    (Test names may hold ``#``, as SyTest's own blacklist format allows: no comments after a name.)
    """
    names = []
    for line in path.read_text(encoding="utf-8").splitlines():
        name = line.strip()
        if name and not name.startswith("#"):
            names.append(name)
    return names


def read_results(tap: Path) -> dict[str, str]:
    """Test name -> ``passed`` / ``failed`` / ``skipped`` from SyTest's TAP output.

    A name SyTest runs more than once (a few tests share a name) passes only if every run passed.
    """
    results: dict[str, str] = {}
    for raw in tap.read_bytes().decode("utf-8", "replace").splitlines():
        m = re.match(r"^(not ok|ok) \d+ (.*)$", raw)
        if not m:
            continue
        status, rest = m.groups()
        name = re.sub(r"\s+# (skip|TODO).*$", "", rest, flags=re.I).strip()
        if re.search(r"# skip", rest, re.I):
            kind = "skipped"
        elif status == "ok":
            kind = "passed"
        else:
            kind = "failed"
        if results.get(name, "passed") != "passed" and kind == "passed":
            continue
        results[name] = kind
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("outdir", type=Path)
    ap.add_argument("passing", type=Path)
    ap.add_argument("--exclusions", type=Path)
    ap.add_argument("--racy", type=Path, help="tests whose outcome is timing: never required")
    ap.add_argument("--update", action="store_true", help="add newly passing tests to PASSING")
    a = ap.parse_args()

    tap = a.outdir / "results.tap"
    if not tap.exists():
        print(f"sytest-check: no {tap}: SyTest did not run", file=sys.stderr)
        return 1
    results = read_results(tap)
    required = read_names(a.passing) if a.passing.exists() else []
    excluded = set(read_names(a.exclusions)) if a.exclusions else set()
    racy = set(read_names(a.racy)) if a.racy else set()
    if racy & set(required):
        print(f"sytest-check: on both the pass list and the racy list: {sorted(racy & set(required))}", file=sys.stderr)
        return 1

    broken = [(n, results.get(n, "not run")) for n in required if results.get(n) != "passed"]
    listed = set(required)
    new = sorted(n for n, kind in results.items() if kind == "passed" and n not in listed and n not in racy)
    counts = {k: sum(1 for v in results.values() if v == k) for k in ("passed", "failed", "skipped")}

    print(
        f"sytest-check: {counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped;"
        f" pass list {len(required)}, excluded {len(excluded)}"
    )
    for name in sorted(racy):
        print(f"  racy, not required ({results.get(name, 'not run')}): {name}")
    for name, kind in broken:
        print(f"  REGRESSION ({kind}): {name}")
    if new:
        if a.update:
            with a.passing.open("a", encoding="utf-8") as f:
                for name in new:
                    f.write(name + "\n")
            print(f"  added {len(new)} newly passing tests to {a.passing}")
        else:
            print(f"  {len(new)} newly passing, not yet on the list (add them with --update):")
            for name in new:
                print(f"    {name}")
    if broken:
        print(f"sytest-check: {len(broken)} test(s) on the pass list did not pass", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

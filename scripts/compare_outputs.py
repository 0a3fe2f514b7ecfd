"""Compare two ketflow output folders file by file, byte for byte.

Usage::

    python scripts/compare_outputs.py BEFORE_OUT AFTER_OUT [--ignore GLOB ...] [--show N]

Every file under either folder is compared, except the run logs that carry the time of the
run in their name and content (``logs/ketflow-*.log``) and Nipype crash files
(``logs/crash/``).  Files under ``logs/`` other than those (``config.json``, ``CITATION.md``)
are compared but listed apart: they describe a run, they are not its results.  A file present
on one side only, or whose bytes differ, is listed; for a text file the first differing line
of each side is shown.  Exit status: 0 when every compared file outside ``logs/`` is identical
(and present on both sides), 1 otherwise.

Used to check that a refactoring leaves the outputs of the demo dataset unchanged (issue 14):
run the participant (and group) level with the code before and after into two folders, then
compare them.  Both output folders must sit at the same depth relative to the BIDS dataset, as
``dataset_description.json`` stores ``DatasetLinks`` relative to the output folder.
"""

from __future__ import annotations

import argparse
import fnmatch
import sys
from pathlib import Path

#: Files that are not compared: the time-stamped run logs and crash files.
EXCLUDED = ("logs/ketflow-*.log", "logs/crash/*")


def listed(root: Path, ignore: tuple[str, ...]) -> set[str]:
    """Relative POSIX paths of the files under ``root``, without the excluded ones."""
    files = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    return {f for f in files if not any(fnmatch.fnmatch(f, pattern) for pattern in EXCLUDED + ignore)}


def first_difference(a: bytes, b: bytes) -> str:
    """The first differing line of two text files (or the first differing byte offset)."""
    try:
        lines_a, lines_b = a.decode().splitlines(), b.decode().splitlines()
    except UnicodeDecodeError:
        offset = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        return f"binary, {len(a)} vs {len(b)} bytes, first difference at byte {offset}"
    for number, (x, y) in enumerate(zip(lines_a, lines_b), start=1):
        if x != y:
            return f"line {number}:\n      - {x[:300]}\n      + {y[:300]}"
    return f"{len(lines_a)} vs {len(lines_b)} lines (one is a prefix of the other)"


def compare(before: Path, after: Path, ignore: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """``{"only_before", "only_after", "differ", "identical"}`` -> relative paths."""
    a, b = listed(before, ignore), listed(after, ignore)
    common = sorted(a & b)
    differ = [name for name in common if (before / name).read_bytes() != (after / name).read_bytes()]
    return {"only_before": sorted(a - b), "only_after": sorted(b - a), "differ": differ,
            "identical": [name for name in common if name not in set(differ)]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--ignore", nargs="*", default=[], help="further glob patterns (relative paths) to skip")
    parser.add_argument("--show", type=int, default=20, help="differences shown in detail (default 20)")
    args = parser.parse_args(argv)
    result = compare(args.before, args.after, tuple(args.ignore))
    in_logs = {key: [f for f in names if f.startswith("logs/")] for key, names in result.items()}
    results = {key: [f for f in names if not f.startswith("logs/")] for key, names in result.items()}
    print(f"compared {args.before} and {args.after}: {len(results['identical'])} identical file(s), "
          f"{len(results['differ'])} differing, {len(results['only_before'])} only before, "
          f"{len(results['only_after'])} only after (outside logs/; skipped: {', '.join(EXCLUDED + tuple(args.ignore))})")
    for key, title in (("only_before", "only before"), ("only_after", "only after")):
        for name in results[key]:
            print(f"  {title}: {name}")
    for k, name in enumerate(results["differ"]):
        detail = first_difference((args.before / name).read_bytes(), (args.after / name).read_bytes()) \
            if k < args.show else "(not shown)"
        print(f"  differs: {name}: {detail}")
    for key in ("differ", "only_before", "only_after"):
        for name in in_logs[key]:
            detail = first_difference((args.before / name).read_bytes(), (args.after / name).read_bytes()) \
                if key == "differ" else key.replace("_", " ")
            print(f"  logs (a description of the run, not a result) {key.replace('_', ' ')}: {name}: {detail}")
    same = not (results["differ"] or results["only_before"] or results["only_after"])
    print("RESULT: identical" if same else "RESULT: outputs differ")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())

"""Comparing two participant-level output directories (for the rerun tests)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nb
import numpy as np


def output_files(root: Path) -> set[str]:
    """Files under ``root`` (relative POSIX paths), without the time-stamped run logs of ``logs/``."""
    files = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    return {f for f in files if not (f.startswith("logs/ketflow-") and f.endswith(".log"))}


def tree_differences(a: Path, b: Path) -> list[str]:
    """What differs between two output trees: files present in one only; NIfTI images whose
    data, affine or header differ; any other file (TSV, JSON, HTML, ...) not byte-identical.

    SVG figures are left out: matplotlib's are not reproducible unless written with
    :func:`ketflow.io.svg.figure_to_svg`.
    """
    files_a, files_b = output_files(a), output_files(b)
    problems = [f"only in {a}: {p}" for p in sorted(files_a - files_b)]
    problems += [f"only in {b}: {p}" for p in sorted(files_b - files_a)]
    for name in sorted(files_a & files_b):
        if name.endswith(".svg"):
            continue
        if name.endswith((".nii", ".nii.gz")):
            img_a, img_b = nb.load(a / name), nb.load(b / name)
            same = (np.array_equal(np.asanyarray(img_a.dataobj), np.asanyarray(img_b.dataobj), equal_nan=True)
                    and np.array_equal(img_a.affine, img_b.affine) and img_a.header == img_b.header)
        else:
            same = (a / name).read_bytes() == (b / name).read_bytes()
        if not same:
            problems.append(f"differs: {name}")
    return problems

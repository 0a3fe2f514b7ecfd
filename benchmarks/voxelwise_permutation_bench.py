"""Time the voxelwise permutation inference (TFCE + cluster mass, two-sided) against nilearn's.

Run (about 15 min on 2 idle cores; ``--quick``: about 1 min):

    NIPYPE_NO_ET=1 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 /work/main/.venv/bin/python \\
        benchmarks/voxelwise_permutation_bench.py [--quick] [--grids 2 4] [--subjects 21 60] \\
        [--n-perm 500] [--nilearn-perm 10] [--threads 1 2]

Data: ``N`` subjects' maps on the MNI152NLin2009cAsym brain mask at 2 mm (fMRIPrep's 97 x 115 x 97
grid, 235,840 voxels) or 4 mm (the demo's 49 x 58 x 49 grid), smooth Gaussian random fields
(FWHM 8 mm, the smoothness of first-level maps after the default 6 mm kernel), one-sample test by
sign flipping. For each grid and N:

* ketflow (:func:`ketflow.group.permutation.permutation_inference`) with ``--n-perm``
  rearrangements on 1 and 2 threads: wall and CPU time per permutation, and both extrapolated
  linearly to 5,000 permutations (the cost is a fixed set-up plus the same work per permutation);
* nilearn 0.14 ``permuted_ols(..., tfce=True, threshold=0.001)``, the engine of
  ``non_parametric_inference``, with ``--nilearn-perm`` permutations on one job, extrapolated the
  same way (a full 5,000 would take hours), and ketflow on the very same rearrangements: the
  largest difference of the null maxima (t, TFCE, cluster mass) shows both compute the same.

Prints one line per measurement with the 1-minute load average at the time; CPU time is the
process's (all threads). Peak RSS at the end.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
import warnings

import nibabel as nib
import numpy as np
from scipy.ndimage import gaussian_filter

from ketflow.group.permutation import nilearn_rearrangements, permutation_inference
from ketflow.templates import get_template

FWHM_MM = 8.0
TARGET_PERMUTATIONS = 5000


def brain_mask(voxel_mm: int) -> tuple[np.ndarray, np.ndarray]:
    """(mask, affine) of the template brain on the 2 mm grid or the simulator's 4 mm grid."""
    from nilearn.image import resample_img

    img = nib.load(get_template(resolution=2, suffix="mask", desc="brain"))
    if voxel_mm == 2:
        return np.asanyarray(img.dataobj) > 0, img.affine
    affine = np.diag([4.0, 4.0, 4.0, 1.0])
    affine[:3, 3] = (-96.0, -132.0, -78.0)
    small = resample_img(img, target_affine=affine, target_shape=(49, 58, 49), interpolation="nearest",
                         force_resample=True, copy_header=True)
    return np.asanyarray(small.dataobj) > 0, affine


def maps(mask: np.ndarray, voxel_mm: int, n: int, seed: int = 0) -> np.ndarray:
    """(n, voxels) unit-variance smooth random fields inside the mask."""
    rng = np.random.default_rng(seed)
    sigma = FWHM_MM / (2 * np.sqrt(2 * np.log(2))) / voxel_mm
    out = np.empty((n, int(mask.sum())))
    for i in range(n):
        field = gaussian_filter(rng.standard_normal(mask.shape), sigma)[mask]
        out[i] = field / field.std()
    return out


def _load() -> float:
    return os.getloadavg()[0]


def timed(fn):
    wall, cpu = time.monotonic(), time.process_time()
    result = fn()
    return result, time.monotonic() - wall, time.process_time() - cpu


def report(label: str, n_perm: int, wall: float, cpu: float) -> None:
    per_wall, per_cpu = wall / n_perm, cpu / n_perm
    print(f"  {label:34s} {n_perm:5d} perms: wall {wall:8.1f} s, CPU {cpu:8.1f} s | per permutation wall "
          f"{1000 * per_wall:7.1f} ms, CPU {1000 * per_cpu:7.1f} ms | 5,000 permutations ~ wall "
          f"{per_wall * TARGET_PERMUTATIONS / 60:6.1f} min, CPU {per_cpu * TARGET_PERMUTATIONS / 60:6.1f} min "
          f"| load {_load():.2f}", flush=True)


def run_case(voxel_mm: int, n: int, n_perm: int, nilearn_perm: int, threads: list[int]) -> None:
    from nilearn.maskers import NiftiMasker
    from nilearn.mass_univariate import permuted_ols

    mask, affine = brain_mask(voxel_mm)
    data = maps(mask, voxel_mm, n)
    tested = np.ones(n)
    print(f"{voxel_mm} mm grid {mask.shape}, {data.shape[1]} voxels, N = {n}", flush=True)
    permutation_inference(data[:, :], tested, mask, n_permutations=2, seed=0)  # numba compilation, not timed
    for n_jobs in threads:
        _, wall, cpu = timed(lambda: permutation_inference(data, tested, mask, n_permutations=n_perm, tfce=True,
                                                           cluster_forming_p=0.001, two_sided=True, seed=1,
                                                           n_jobs=n_jobs))
        report(f"ketflow, {n_jobs} thread(s)", n_perm, wall, cpu)
    if nilearn_perm:
        masker = NiftiMasker(nib.Nifti1Image(mask.astype(np.uint8), affine)).fit()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref, wall, cpu = timed(lambda: permuted_ols(tested[:, None], data, n_perm=nilearn_perm,
                                                        two_sided_test=True, random_state=3, masker=masker,
                                                        tfce=True, threshold=0.001, n_jobs=1))
        report("nilearn permuted_ols, 1 job", nilearn_perm, wall, cpu)
        same = permutation_inference(data, tested, mask, two_sided=True, cluster_forming_p=0.001,
                                     rearranged=nilearn_rearrangements(n, nilearn_perm, 3, signflip=True))
        diffs = {key: float(np.abs(np.sort(same.null[key]) - np.sort(ref[ref_key][0])).max()
                            / max(np.abs(ref[ref_key][0]).max(), 1e-12))
                 for key, ref_key in (("t", "h0_max_t"), ("tfce", "h0_max_tfce"), ("cluster_mass", "h0_max_mass"))}
        print("  same rearrangements as nilearn, largest relative difference of the null maxima: "
              + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items()), flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 mm, N = 21, 50 permutations, 3 of nilearn")
    parser.add_argument("--grids", type=int, nargs="+", default=[2, 4], choices=[2, 4])
    parser.add_argument("--subjects", type=int, nargs="+", default=[21, 60])
    parser.add_argument("--n-perm", type=int, default=500, help="ketflow permutations timed (default 500)")
    parser.add_argument("--nilearn-perm", type=int, default=10, help="nilearn permutations timed (0: skip)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args(argv)
    if args.quick:
        args.grids, args.subjects, args.n_perm, args.nilearn_perm = [4], [21], 50, 3
    print(f"load average at start: {os.getloadavg()}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    for voxel_mm in args.grids:
        for n in args.subjects:
            run_case(voxel_mm, n, args.n_perm, args.nilearn_perm, args.threads)
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())

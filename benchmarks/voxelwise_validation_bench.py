"""Detection and false-positive rates of the voxelwise second level over repeated simulated studies.

Run (about 25 min of CPU with the defaults; ``--quick``: about 1 min):

    NIPYPE_NO_ET=1 OMP_NUM_THREADS=1 /work/main/.venv/bin/python benchmarks/voxelwise_validation_bench.py \\
        CALIBRATION_BIDS CALIBRATION_OUT [--subjects 20 40] [--studies 100] [--n-perm 100] [--quick]

``CALIBRATION_BIDS`` / ``CALIBRATION_OUT``: a study simulated by ``ketflow-simulate`` (4 mm) and
its participant-level outputs. Simulating and processing images for hundreds of studies is out of
reach, so the studies are drawn by a voxel-level generator calibrated on that study, for two map
kinds that carry the simulator's arm x session effects:

* conflict ``incongruent-gt-congruent`` activation, target dACC (change: ketamine -1.0 +- 0.4,
  midazolam -0.2 +- 0.4 in the simulator's units);
* resting seed map of ``amygdala_L`` (Fisher z), target vmPFC (coupling change: ketamine +0.20 +- 0.08,
  midazolam 0 +- 0.08).

Calibration (printed): in the target ROI, the participant-level map's ROI mean regressed on the
true value gives a slope a and intercept b (the maps' scale of the truth); everything else is the
voxelwise mean map m(x) plus residual noise, whose voxelwise SD s(x) and smoothness (FWHM, from
the residuals' spatial derivatives) are measured. A simulated subject's session map is then
``m(x) + [x in target] * (a * truth + b - m(x)) + s(x) * e(x)`` with e a unit-variance Gaussian
field of the measured smoothness, independent between maps (the calibration study's residuals of
the same subject's two sessions correlate by -0.06 to -0.07, i.e. not at all beyond the mean's
removal), and the truth of each subject drawn by the simulator's own ``draw_subject``. Null
studies set every subject's change to 0.

Each study (N subjects, arms alternating) runs :func:`ketflow.group.voxelwise.second_level` with
the packaged settings (6 mm smoothing, TFCE, cluster mass at p < 0.001, two-sided, small volume =
the circuit ROIs) and ``--n-perm`` rearrangements for the paired change and the arm x change tests.
Printed per N, map kind and test:

* detection: fraction of effect studies with an FWE-significant voxel (p < 0.05) of the true sign
  in the target ROI, per correction;
* outside: fraction of effect studies with a significant voxel more than 12 mm (2 x FWHM) from the
  target ROI (the spatial spread of a true effect through smoothing and TFCE, not an error rate);
* FWE on null studies: fraction with any significant voxel anywhere (the family-wise error rate,
  0.05 expected) and the mean fraction of voxels with uncorrected p < 0.001 (0.001 expected; the
  parametric maps' calibration).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy.ndimage import distance_transform_edt, gaussian_filter

from ketflow.group.voxelwise import Settings, common_mask, design_matrix, difference_images, second_level
from ketflow.signal.rois import read_sphere_table, sphere_labels
from ketflow.simulate.parameters import draw_subject

KINDS = {
    "conflict": ("task-conflict_space-MNI152NLin2009cAsym_contrast-incongruentGtCongruent_stat-effect_statmap",
                 "dACC", "conflict_dACC_incongruent_minus_congruent", -1),
    "rest": ("task-rest_space-MNI152NLin2009cAsym_stat-fisherz_desc-amygdalaL_boldmap", "vmPFC",
             "rest_vmPFC_amygdala_coupling", +1),
}
CORRECTIONS = ("voxelFWE", "tfceFWE", "clusterMassFWE", "svcVoxelFWE", "svcTfceFWE")
ALPHA = 0.05
OUTSIDE_MM = 12.0


def truth_value(session: dict, kind: str) -> float:
    """The true value of a kind's target measure in a session of ``draw_subject`` / ground_truth.json."""
    if kind == "conflict":
        dacc = session["conflict"]["activation"]["dACC"]
        return (dacc["cI"] + dacc["iI"]) / 2 - dacc["congruent"]
    rest = session["rest"]
    order = rest["roi_order"]
    return float(np.arctanh(rest["coupling"][order.index("vmPFC")][order.index("amygdala_L")]))


def calibrate(bids: Path, out: Path, kind: str) -> dict:
    """The generator's parameters for one map kind, measured on a processed simulated study."""
    pattern, target, _, _ = KINDS[kind]
    truth = json.loads((bids / "ground_truth.json").read_text())
    files = sorted(out.glob(f"sub-*/ses-*/func/*{pattern}.nii.gz"))
    images = [nib.load(f) for f in files]
    data = np.stack([np.asanyarray(i.dataobj, dtype=float) for i in images])
    mask = common_mask(images)
    spheres = read_sphere_table()
    labels = sphere_labels(spheres, mask.shape, images[0].affine)
    roi = (labels == [s.name for s in spheres].index(target) + 1) & mask
    values = np.array([truth_value(truth["subjects"][f.parts[-4]]["sessions"][f.parts[-3][4:]], kind)
                       for f in files])
    slope, intercept = np.polyfit(values, data[:, roi].mean(axis=1), 1)
    mean = data.mean(axis=0)
    resid = data - mean
    resid[:, roi] = data[:, roi] - (slope * values[:, None] + intercept)
    sd = np.zeros(mask.shape)
    sd[mask] = resid[:, mask].std(axis=0, ddof=1)
    sd = np.where(mask, gaussian_filter(sd, 1.0) / np.maximum(gaussian_filter(mask.astype(float), 1.0), 1e-6), 0)
    ratio = _derivative_ratio(resid, mask)
    voxel_mm = float(abs(images[0].affine[0, 0]))
    fwhm_mm = float(np.sqrt(4 * np.log(2) / ratio) * voxel_mm)
    r = float(np.corrcoef(values, data[:, roi].mean(axis=1))[0, 1])
    return {"kind": kind, "target": target, "mask": mask, "affine": images[0].affine, "mean": mean, "sd": sd,
            "roi": roi, "slope": float(slope), "intercept": float(intercept), "fwhm_mm": fwhm_mm, "voxel_mm": voxel_mm,
            "ratio": ratio,
            "labels": labels, "n_maps": len(files), "r_roi_truth": r,
            "median_sd": float(np.median(resid[:, mask].std(axis=0, ddof=1)))}


def _derivative_ratio(fields: np.ndarray, mask: np.ndarray) -> float:
    """var(first difference) / var(value) of (maps, X, Y, Z) fields inside the mask, mean over axes.

    For a Gaussian field of FWHM w voxels this is 4 ln 2 / w**2 (the usual smoothness estimator).
    """
    ratios = []
    for axis in range(3):
        both = np.logical_and(np.take(mask, range(mask.shape[axis] - 1), axis=axis),
                              np.take(mask, range(1, mask.shape[axis]), axis=axis))
        ratios.append(np.var(np.diff(fields, axis=axis + 1)[:, both]) / np.var(fields[:, mask]))
    return float(np.mean(ratios))


def _kernel_sigma(ratio: float) -> float:
    """Gaussian kernel SD (voxels) giving white noise that derivative ratio: lag-1 correlation
    exp(-1 / (4 sigma^2)) = 1 - ratio / 2 (0 when the noise is rougher than white)."""
    rho = 1.0 - ratio / 2.0
    return float(np.sqrt(-1.0 / (4.0 * np.log(rho)))) if 0 < rho < 1 else 0.0


def _noise(rng, cal) -> np.ndarray:
    """A unit-variance Gaussian field of the calibrated smoothness, scaled by s(x)."""
    sigma = _kernel_sigma(cal["ratio"])
    field = rng.standard_normal(cal["mask"].shape)
    if sigma > 0:
        field = gaussian_filter(field, sigma)
    field /= field[cal["mask"]].std()
    return field * cal["sd"]


def session_map(rng, cal, value: float) -> nib.Nifti1Image:
    data = cal["mean"].copy()
    data[cal["roi"]] = cal["slope"] * value + cal["intercept"]
    data = np.where(cal["mask"], data + _noise(rng, cal), 0.0)
    return nib.Nifti1Image(data.astype(np.float32), cal["affine"])


def simulate_study(rng, cal, n: int, null: bool):
    """(pre maps, post maps, arm coding) of one study."""
    names = [s.name for s in read_sphere_table()]
    pre, post, arm = [], [], []
    for i in range(n):
        group = "ketamine" if i % 2 == 0 else "midazolam"
        subject = draw_subject(rng, group, names)
        before = truth_value(subject["sessions"]["pre"], cal["kind"])
        after = before if null else truth_value(subject["sessions"]["post"], cal["kind"])
        pre.append(session_map(rng, cal, before))
        post.append(session_map(rng, cal, after))
        arm.append(0.5 if group == "ketamine" else -0.5)
    return pre, post, np.array(arm)


def evaluate_study(cal, pre, post, arm, settings, n_jobs, sign, designs=("paired_change", "arm_by_change")) -> dict:
    change = difference_images(post, pre)
    mask = common_mask(pre + post)
    svc = (cal["labels"] > 0) & mask
    far = distance_transform_edt(~cal["roi"], sampling=cal["voxel_mm"]) > OUTSIDE_MM
    out = {}
    for design, contrast in (("paired_change", "intercept"), ("arm_by_change", "arm")):
        if design not in designs:
            continue
        matrix = design_matrix(design, len(change), arm=arm if design == "arm_by_change" else None)
        result = second_level(change, matrix, contrast, mask, settings=settings, svc=svc, n_jobs=n_jobs)
        t = np.asanyarray(result.maps[("t", None)].dataobj)
        p = np.asanyarray(result.maps[("p", None)].dataobj)
        row = {"uncorrected_rate": float(((p[mask] < 0.001) | (p[mask] > 0.999)).mean())}  # two-sided p < 0.002
        for correction in CORRECTIONS:
            significant = np.asanyarray(result.maps[("logp", correction)].dataobj) > -np.log10(ALPHA)
            row[correction] = {"target": bool((significant & cal["roi"] & (np.sign(t) == sign)).any()),
                               "outside": bool((significant & far).any()), "any": bool(significant.any())}
        out[design] = row
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bids", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--subjects", type=int, nargs="+", default=[20, 40])
    parser.add_argument("--studies", type=int, default=100, help="effect studies and null studies, each")
    parser.add_argument("--n-perm", type=int, default=100)
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=list(KINDS))
    parser.add_argument("--null-only", action="store_true", help="only null studies (error rates)")
    parser.add_argument("--designs", nargs="+", default=["paired_change", "arm_by_change"],
                        choices=["paired_change", "arm_by_change"])
    parser.add_argument("--quick", action="store_true", help="N = 20, 5 studies, 50 permutations")
    args = parser.parse_args(argv)
    if args.quick:
        args.subjects, args.studies, args.n_perm = [20], 5, 50
    print(f"load average at start: {os.getloadavg()}", flush=True)
    started, cpu = time.monotonic(), time.process_time()
    for kind in args.kinds:
        cal = calibrate(args.bids, args.out, kind)
        print(f"calibration {kind}: {cal['n_maps']} maps, target {cal['target']} ({int(cal['roi'].sum())} voxels): "
              f"ROI mean = {cal['slope']:.3f} x truth + {cal['intercept']:.3f} (r = {cal['r_roi_truth']:.2f}); "
              f"residual SD median {cal['median_sd']:.3f}; FWHM {cal['fwhm_mm']:.1f} mm", flush=True)
        check = np.stack([_noise(np.random.default_rng(i), cal) for i in range(8)])
        generated = np.sqrt(4 * np.log(2) / _derivative_ratio(check, cal["mask"])) * cal["voxel_mm"]
        print(f"  generator noise FWHM {generated:.1f} mm (kernel SD {_kernel_sigma(cal['ratio']):.2f} voxels)",
              flush=True)
        for n in args.subjects:
            rng = np.random.default_rng([args.seed, n, len(kind)])
            tallies = {}
            for null in ((True,) if args.null_only else (False, True)):
                for study in range(args.studies):
                    pre, post, arm = simulate_study(rng, cal, n, null)
                    # a new draw of rearrangements per study: the rates are the method's, not one draw's
                    settings = Settings(n_permutations=args.n_perm, seed=args.seed * 100003 + study)
                    result = evaluate_study(cal, pre, post, arm, settings, args.n_jobs, KINDS[kind][3],
                                            args.designs)
                    for design, row in result.items():
                        tallies.setdefault((null, design), []).append(row)
            for design in args.designs:
                effect, nulls = tallies.get((False, design), []), tallies[(True, design)]
                detect = ", ".join(f"{c} {np.mean([r[c]['target'] for r in effect]):.2f}" for c in CORRECTIONS) \
                    if effect else "not run"
                outside = ", ".join(f"{c} {np.mean([r[c]['outside'] for r in effect]):.2f}" for c in CORRECTIONS) \
                    if effect else "not run"
                fwe = ", ".join(f"{c} {np.mean([r[c]['any'] for r in nulls]):.3f}" for c in CORRECTIONS)
                unc = np.mean([r["uncorrected_rate"] for r in nulls])
                print(f"N={n} {kind} {design} ({len(effect)} effect + {len(nulls)} null studies, "
                      f"{args.n_perm} rearrangements)\n  detection in {cal['target']} (right sign): {detect}\n"
                      f"  effect studies, significant > {OUTSIDE_MM:g} mm from {cal['target']}: {outside}\n"
                      f"  null studies, any significant voxel (FWE): {fwe}\n"
                      f"  null studies, voxels with two-sided uncorrected p < 0.002: {unc:.4f} (0.002 expected)",
                      flush=True)
    print(f"wall {time.monotonic() - started:.0f} s, CPU {time.process_time() - cpu:.0f} s; "
          f"load average at end: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

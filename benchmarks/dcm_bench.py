"""Timing (and calibration) benchmark of ketflow's DCM for fMRI.

Times ``fit_dcm`` on simulated 2-, 3-, 6- and 9-region block designs (200 scans,
TR 2 s, two inputs, full A, one modulation per region pair of the chain,
SNR 2) on one core, then the same 2- and 3-region models with a nonlinear (D)
term (the driven region gates its forward connection), and optionally measures
the coverage of the 90% credible intervals of A/B/C over many simulated datasets
(3 regions; SNR 1, 2, 4; white and AR(1) noise, rho 0.5 and 0.8), with SPM12's
noise model and the packaged one.

Run from the repository root::

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 \\
        python benchmarks/dcm_bench.py [--repeats 5] [--coverage 100] [--quick]

Prints Markdown tables (regions, free parameters, iterations, median and
minimum wall time per fit, median CPU time per fit, F); on a shared machine
the CPU time is the better measure. SPM12 r7771 under Octave 7.3 takes ~40 s for
the 3-region reference case (tests/data/spm/spm_dcm/dcm3_block/results.json) and
17-22 s for the 2-region ones; for a 2-region nonlinear model issue 13 reports 56 s
(no nonlinear SPM reference case is kept in the repository, and this machine has no
Octave to measure one).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import time

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import numpy as np

from scipy.signal import lfilter

from ketflow.config import load_config
from ketflow.dcm import DCMSpec, fit_dcm, simulate_bold
from ketflow.dcm.spec import DCMOptions

TR, N_SCANS = 2.0, 200
DT = TR / 16
#: SPM12 under Octave on a 2-region nonlinear DCM (s), as reported in issue 13 (not measured here)
SPM_OCTAVE_NONLINEAR_2_REGIONS_S = 56.0


def block_inputs():
    U = np.zeros((N_SCANS * 16, 2))
    for k, onset in enumerate(range(10, 390, 40)):
        rows = slice(int(onset / DT), int((onset + 20) / DT))
        U[rows, 0] = 1.0
        U[rows, 1] = float(k % 2 == 0)
    return U


def chain_model(n):
    """Region 2 is driven; forward chain 2->1->3->4...; fear modulates 2->1 and 2->3."""
    A = np.zeros((n, n))
    order = [1, 0] + list(range(2, n))
    for src, dst in itertools.pairwise(order):
        A[dst, src] = 0.3
        A[src, dst] = -0.2
    B = np.zeros((2, n, n))
    B[1, 0, 1] = 0.4
    if n > 2:
        B[1, 2, 1] = -0.3
    C = np.zeros((n, 2))
    C[1, 0] = 1.0
    return A, B, C


def gating(n):
    """Nonlinear term: activity of the driven region 2 gates its connection 2->1 (D[k=2, to=1, from=2])."""
    D = np.zeros((n, n, n))
    D[1, 0, 1] = 2.0
    return D


def make_spec(n, seed, U, nonlinear=False):
    A, B, C = chain_model(n)
    D = gating(n) if nonlinear else None
    y0 = simulate_bold(A, B, C, U, DT, TR, N_SCANS, D=D)
    rng = np.random.default_rng(seed)
    y = y0 + rng.standard_normal(y0.shape) * y0.std(axis=0) / 2
    spec = DCMSpec(Y=y, U=U, U_dt=DT, TR=TR, a=np.ones((n, n)), b=(B != 0).astype(float),
                   c=(C != 0).astype(float), d=None if D is None else (D != 0).astype(float))
    return spec, (A, B, C)


#: the packaged configuration's inversion options (``dcm.options``)
PACKAGED = DCMOptions(**load_config().dcm.options.model_dump())
#: noise models compared by ``--coverage``: SPM12's (white noise, its hyperprior; otherwise the
#: packaged options, e.g. its M-step) and the packaged configuration's
NOISE_MODELS = {
    "SPM12 (iid, hC 1/128)": dataclasses.replace(PACKAGED, noise="iid", hC=DCMOptions.hC),
    f"packaged ({PACKAGED.noise}, hC {PACKAGED.hC:g})": PACKAGED,
}


def timing(repeats, sizes=(2, 3, 6, 9), nonlinear=False):
    """Fits with SPM12's options (DCMOptions defaults), and CPU time with the packaged noise
    model (AR(1): two inversions)."""
    U = block_inputs()
    if nonlinear:
        # the first nonlinear fit in a process loads the compiled integrator (numba's on-disk
        # cache; it is compiled, ~3 s, the first time after an install or a code change)
        c0 = time.process_time()
        fit_dcm(make_spec(2, 1, U, nonlinear=True)[0])
        print(f"\nNonlinear (D) models; first fit in this process (loading the compiled integrator): "
              f"{time.process_time() - c0:.2f} s CPU\n")
    print("| regions | free parameters | iterations | wall median s | wall min s | CPU median s | F "
          "| CPU median s, packaged noise model |")
    print("|---|---|---|---|---|---|---|---|")
    for n in sizes:
        spec, _ = make_spec(n, 0, U, nonlinear=nonlinear)
        times, cpu, cpu_packaged = [], [], []
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            r = fit_dcm(spec)
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
            c0 = time.process_time()
            fit_dcm(dataclasses.replace(spec, options=PACKAGED))
            cpu_packaged.append(time.process_time() - c0)
        n_free = int((r.prior_var > 0).sum())
        label = f"{n} + D" if nonlinear else f"{n}"
        print(f"| {label} | {n_free} | {r.n_iterations} | {np.median(times):.3f} | {min(times):.3f} | "
              f"{np.median(cpu):.3f} | {r.F:.1f} | {np.median(cpu_packaged):.3f} |")
        if nonlinear and n == 2:
            speedup = [SPM_OCTAVE_NONLINEAR_2_REGIONS_S / t for t in (np.median(times), np.median(cpu))]
            print(f"\n2-region nonlinear: {speedup[0]:.0f}x (wall) / {speedup[1]:.0f}x (CPU) faster than "
                  f"SPM12/Octave's {SPM_OCTAVE_NONLINEAR_2_REGIONS_S:g} s (issue 13)\n")


def coverage(n_datasets, n=3, snrs=(1.0, 2.0, 4.0), rhos=(0.0, 0.5, 0.8)):
    """90% interval coverage of A/B/C over ``n_datasets`` noise draws per SNR and AR(1) coefficient.

    Noise: AR(1) with coefficient rho, scaled to SD = signal SD / SNR per region.
    """
    U = block_inputs()
    A, B, C = chain_model(n)
    y0 = simulate_bold(A, B, C, U, DT, TR, N_SCANS)
    print(f"\n90% CI coverage of A/B/C, {n} regions, {n_datasets} datasets per cell "
          f"(in brackets: mean estimated noise AR(1) coefficient)")
    print("| SNR | noise AR(1) | " + " | ".join(NOISE_MODELS) + " |")
    print("|---|---|" + "---|" * len(NOISE_MODELS))
    for snr, rho in itertools.product(snrs, rhos):
        cells = []
        for options in NOISE_MODELS.values():
            hits, rho_hat = [], []
            for seed in range(n_datasets):
                rng = np.random.default_rng(seed + 1000)
                e = lfilter([1.0], [1.0, -rho], rng.standard_normal(y0.shape), axis=0)
                y = y0 + e / e.std(axis=0) * y0.std(axis=0) / snr
                spec = DCMSpec(Y=y, U=U, U_dt=DT, TR=TR, a=np.ones((n, n)), b=(B != 0).astype(float),
                               c=(C != 0).astype(float), options=options)
                r = fit_dcm(spec)
                truth = r.layout.pack(A, B, C, np.zeros(n), 0.0, 0.0)
                t = r.parameter_table()
                keep = (t["free"] & t["name"].str.match("^[ABC]_")).to_numpy()
                hits.append(((t["ci90_low"] <= truth) & (truth <= t["ci90_high"])).to_numpy()[keep])
                rho_hat.append(r.noise_ar1.mean())
            cells.append(f"{np.mean(hits):.2f} ({np.mean(rho_hat):.2f})")
        print(f"| {snr:g} | {rho:g} | " + " | ".join(cells) + " |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--coverage", type=int, default=0,
                        help="datasets per SNR and noise correlation for the coverage check (0: skip)")
    parser.add_argument("--quick", action="store_true", help="smoke run: one repeat, 2 and 3 regions")
    args = parser.parse_args()
    repeats, sizes = (1, (2, 3)) if args.quick else (args.repeats, (2, 3, 6, 9))
    timing(repeats, sizes)
    timing(repeats, (2, 3), nonlinear=True)
    if args.coverage:
        coverage(args.coverage)


if __name__ == "__main__":
    main()

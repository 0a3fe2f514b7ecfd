"""How well could any gPPI recover the simulator's PPI truth? ROI-level ceiling analysis.

Generates faces runs with the simulator's own signal model (``ketflow.simulate``: subject
parameters, events, DCM ROI signals, ``noise_free_ppi`` truth; no voxels) and adds AR(1)
noise (coefficient 0.3) to the ROI signals at the size measured in the simulated 4 mm
demo after confound regression (vmPFC ~0.18 %, amygdala_L ~0.31 %; ``--noise`` scales
both).  For the amygdala_L -> vmPFC fearful-gt-shapes PPI (the truth's ``fearful``, see
docs/glm_ppi.md) it compares, across runs, the correlation with the truth of gPPI built
from

* ``oracle``: the seed's true neuronal state (known only to the simulator);
* ``deconvolved``: ketflow's PEB deconvolution of the noisy seed BOLD, with SPM's fixed
  error variance (1/4 of the seed's variance) and with 0.2x / 4x that variance;
* ``bold_product``: the non-deconvolved variant;

each fitted with OLS and AR(1) on a design of conditions + 128 s cosines.

Run (about 1 minute)::

    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/glm_ppi_ceiling.py [--subjects 12] [--noise 1.0]

Prints a Markdown table.
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

import ketflow.signal.ppi as ppi_module
from ketflow.signal.design import make_task_design
from ketflow.signal.glm import compute_contrast, fit_glm
from ketflow.signal.gppi import gppi_contrasts, nuisance_columns, ppi_terms, task_columns
from ketflow.signal.hrf import convolve_microtime, spm_canonical_hrf
from ketflow.simulate.design import faces_events
from ketflow.simulate.grid import roi_names
from ketflow.simulate.parameters import draw_subject
from ketflow.simulate.signals import MICROTIME, faces_signals, neuronal_states, noise_free_ppi

TR, N, START = 2.0, 150, 1.0
NOISE_SD = {"vmPFC": 0.18, "amygdala_L": 0.31}


def ar1_noise(rng, sd: float, phi: float = 0.3) -> np.ndarray:
    e = rng.standard_normal(N) * sd * np.sqrt(1 - phi**2)
    out = np.empty(N)
    out[0] = rng.standard_normal() * sd
    for t in range(1, N):
        out[t] = phi * out[t - 1] + e[t]
    return out


def ppi_from_state(state: np.ndarray, design) -> pd.DataFrame:
    """Interaction terms from a given micro-time neuronal signal (centred psych x state)."""
    hrf = spm_canonical_hrf(TR / MICROTIME)
    xn = state - state.mean()
    return pd.DataFrame({f"PPI_{c}": convolve_microtime((design.microtime[:, k] - design.microtime[:, k].mean()) * xn,
                                                        hrf, N, MICROTIME, design.microtime_onset)
                         for k, c in enumerate(design.columns)}, index=design.matrix.index)


def deconvolved_terms(seed: np.ndarray, design, error_scale: float) -> pd.DataFrame:
    """ketflow's PPI terms with the PEB error variance scaled by ``error_scale``."""
    default = ppi_module._ERROR_VARIANCE
    ppi_module._ERROR_VARIANCE = default * error_scale
    try:
        return ppi_terms(seed, design, deconvolve=True)
    finally:
        ppi_module._ERROR_VARIANCE = default


def estimate(target, seed, terms, design, noise_model) -> float:
    x = pd.concat([design.matrix[task_columns(design)], pd.Series(seed, index=terms.index, name="seed"), terms,
                   design.matrix[nuisance_columns(design)]], axis=1)
    vec = gppi_contrasts(design, x.columns, {"fgs": "fearful - shapes"})["fgs"]
    return float(compute_contrast(fit_glm(target[:, None], x.to_numpy(), noise_model), vec).effect[0])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=12)
    parser.add_argument("--noise", type=float, default=1.0, help="scales the ROI noise SDs")
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args(argv)
    names = roi_names()
    rows = []
    for i in range(args.subjects):
        params = draw_subject(np.random.default_rng([args.seed, 1, i]), ("ketamine", "midazolam")[i % 2], names)
        for si, ses in enumerate(("pre", "post")):
            rng = np.random.default_rng([args.seed, 2, i, si])
            truth = params["sessions"][ses]["faces"]
            events = faces_events(N, TR, rng)
            signals, u = faces_signals(events, truth, N, TR, START, rng)
            true_ppi = noise_free_ppi(signals, u, events, truth["dcm"], N, TR, START)["amygdala_L"]["fearful"]
            design = make_task_design(events, TR, N, ["fearful", "neutral", "shapes"], start_time=START)
            state = neuronal_states(truth["dcm"], u, TR / MICROTIME)[:, truth["dcm"]["regions"].index("amygdala_L")]
            seed = signals["amygdala_L"] + args.noise * ar1_noise(rng, NOISE_SD["amygdala_L"])
            target = signals["vmPFC"] + args.noise * ar1_noise(rng, NOISE_SD["vmPFC"])
            variants = {
                "oracle (true neuronal state)": ppi_from_state(state, design),
                "deconvolved (SPM error variance)": deconvolved_terms(seed, design, 1.0),
                "deconvolved, error variance x0.2": deconvolved_terms(seed, design, 0.2),
                "deconvolved, error variance x4": deconvolved_terms(seed, design, 4.0),
                "bold_product": ppi_terms(seed, design, deconvolve=False),
            }
            for name, terms in variants.items():
                for noise_model in ("ols", "ar1"):
                    rows.append({"variant": name, "noise_model": noise_model, "truth": true_ppi,
                                 "estimate": estimate(target, seed, terms, design, noise_model)})
    table = pd.DataFrame(rows)
    print(f"{args.subjects} subjects x 2 sessions, noise x{args.noise:g}; r with the truth (sign agreement)\n")
    print("| PPI regressor | OLS | AR(1) |\n|---|---|---|")
    for name, group in table.groupby("variant", sort=False):
        cells = []
        for noise_model in ("ols", "ar1"):
            g = group[group["noise_model"] == noise_model]
            r = np.corrcoef(g["estimate"], g["truth"])[0, 1]
            cells.append(f"{r:.2f} ({np.mean(np.sign(g['estimate']) == np.sign(g['truth'])):.2f})")
        print(f"| {name} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()

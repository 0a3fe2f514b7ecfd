"""True per-subject, per-session parameters of the simulated circuit (the ground truth).

Every value is drawn once per subject from the generator's random stream and stored in
``ground_truth.json``; the signal models in :mod:`ketflow.simulate.signals` only read them.

faces: a bilinear one-state DCM (Friston et al. 2003, NeuroImage 19:1273-1302; SPM12
parameterisation: off-diagonal A, B, C in Hz, diagonal A_ii log-scaled so the self-decay rate is
exp(A_ii)/2) over vmPFC, amygdala_L and amygdala_R. ``faces`` drives both amygdalae (C),
``fearful`` modulates amygdala_L -> vmPFC (B) and drives amygdala_R (C), and two random inputs
(``endogenous_L``, ``endogenous_R``: spontaneous activity, see :class:`FacesModel`) drive the
amygdalae so that the seed varies within conditions and the psychophysiological interaction is
identifiable (McLaren et al. 2012, NeuroImage 61:1277-1286). vmPFC and amygdala_L form a closed
subsystem (nothing enters it from amygdala_R), so the two-region DCM of ketflow's default
configuration is exactly specified apart from the spontaneous input, which a deterministic DCM
does not model. The true strength of the amygdala_L -> vmPFC PPI is the DCM's modulation B
(:func:`ppi_modulation`); B varies between subjects (:class:`FacesModel`) and changes with
treatment.
The other ROIs carry activations with known amplitudes; rest carries correlated slow fluctuations
with a known correlation matrix. Session change (pre -> post) depends on the treatment arm.

rest: each subject has its own coupling matrix (a trait, shared by both sessions). It is the
correlation matrix of ``REST_TRAIT_DOF`` Gaussian draws whose population correlation is
``REST_PAIRS`` (plus the subject's vmPFC - amygdala value), i.e. a Wishart-distributed
covariance (Wishart 1928, Biometrika 20A:32-52) normalised to unit diagonal. It is positive
definite by construction, and every edge varies between subjects with SD about
1/sqrt(REST_TRAIT_DOF) = 0.1 in Fisher z, so that an 8-minute run (sampling SD of a correlation
about 0.1) has an edge-level test-retest ICC of about 0.3-0.4, in the range real data show (mean
edge ICC 0.29, Noble et al. 2019, NeuroImage 203:116157). The post-treatment matrix is the pre
matrix plus the treatment effect on vmPFC - amygdala (both sides), so no other edge changes
between sessions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DCM_REGIONS = ["vmPFC", "amygdala_L", "amygdala_R"]
DCM_INPUTS = ["faces", "fearful", "endogenous_L", "endogenous_R"]

# arm -> (mean, sd) of the pre -> post change of each imaging measure
CHANGE_MODEL = {
    "faces_B_fearful_amygdala_L_to_vmPFC": {"ketamine": (0.40, 0.12), "midazolam": (0.0, 0.12)},
    "conflict_dACC_incongruent_minus_congruent": {
        "ketamine": (-1.0, 0.4),
        "midazolam": (-0.2, 0.4),
    },
    "rest_vmPFC_amygdala_coupling": {"ketamine": (0.20, 0.08), "midazolam": (0.0, 0.08)},
}

# faces: non-DCM ROI amplitudes (percent signal change per unit ketflow first-level regressor)
FACES_ACTIVATION = {
    "antInsula_L": {"fearful": 0.6, "neutral": 0.3, "shapes": 0.0},
    "antInsula_R": {"fearful": 0.7, "neutral": 0.35, "shapes": 0.0},
    "dACC": {"fearful": 0.4, "neutral": 0.25, "shapes": 0.05},
    "rACC": {"fearful": 0.2, "neutral": 0.1, "shapes": 0.0},
    "antHippocampus_L": {"fearful": 0.3, "neutral": 0.2, "shapes": 0.0},
    "antHippocampus_R": {"fearful": 0.3, "neutral": 0.2, "shapes": 0.0},
}

# rest: pairs of the population correlation matrix of the neural fluctuations
REST_PAIRS = {
    ("amygdala_L", "amygdala_R"): 0.80,
    ("antHippocampus_L", "antHippocampus_R"): 0.40,
    ("antInsula_L", "antInsula_R"): 0.40,
    ("amygdala_L", "antHippocampus_L"): 0.30,
    ("amygdala_R", "antHippocampus_R"): 0.30,
    ("dACC", "antInsula_L"): 0.25,
    ("dACC", "antInsula_R"): 0.25,
    ("rACC", "vmPFC"): 0.35,
    ("dACC", "rACC"): 0.20,
}
REST_STRONGEST_PAIR = ("amygdala_L", "amygdala_R")
REST_AMPLITUDE = 1.0  # percent: SD of each ROI's noise-free resting BOLD
REST_TRAIT_DOF = 100  # degrees of freedom of the subject-level Wishart draw (between-subject SD)


@dataclass(frozen=True)
class FacesModel:
    """Population settings of the faces DCM that docs/simulator.md justifies.

    ``b_fear_pre_mean`` / ``b_fear_pre_sd`` (Hz): fearful modulation of amygdala_L -> vmPFC
    before treatment across subjects; the SD is the random-effects SD SPM's PEB expects a priori
    (prior SD / 4 for a B of prior variance 1; Friston et al. 2016, NeuroImage 128:413-431).
    ``endogenous_sd`` (input units; the task inputs are 0/1) and ``endogenous_smoothing_s``
    (Gaussian sigma, s): the spontaneous inputs of the amygdalae, white noise smoothed like the
    rest model's neural fluctuations, with an amplitude that makes the spontaneous amygdala BOLD
    about as large (SD ~1 %) as the simulator's resting BOLD (spontaneous activity persists
    during tasks nearly unchanged and adds to the evoked response: Fox et al. 2006, Nat Neurosci
    9:23-25; He 2011, J Neurosci 31:13786-13795).
    """

    b_fear_pre_mean: float = 0.35
    b_fear_pre_sd: float = 0.25
    endogenous_sd: float = 0.85
    endogenous_smoothing_s: float = 1.0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _draw_change(rng: np.random.Generator, arm: str, effect_scale: float = 1.0) -> dict:
    """Each measure's pre -> post change: N(effect_scale x the arm's mean, the arm's SD)."""
    return {k: float(rng.normal(effect_scale * v[arm][0], v[arm][1])) for k, v in CHANGE_MODEL.items()}


def _dcm_parameters(rng: np.random.Generator, b_fear: float, faces: FacesModel) -> dict:
    """A (3 x 3, to x from), B (4 x 3 x 3), C (3 x 4) and hemodynamic parameters."""
    a = np.zeros((3, 3))
    a[0, 1] = rng.normal(0.40, 0.05)  # amygdala_L -> vmPFC
    a[1, 0] = rng.normal(-0.30, 0.05)  # vmPFC -> amygdala_L (top-down regulation)
    a[2, 1] = rng.normal(0.20, 0.05)  # amygdala_L -> amygdala_R
    a[2, 0] = rng.normal(-0.20, 0.05)  # vmPFC -> amygdala_R
    b = np.zeros((4, 3, 3))
    b[1, 0, 1] = b_fear
    c = np.zeros((3, 4))
    c[1, 0] = rng.normal(1.0, 0.1)  # faces -> amygdala_L
    c[2, 0] = rng.normal(0.8, 0.1)  # faces -> amygdala_R
    c[2, 1] = rng.normal(0.3, 0.05)  # fearful -> amygdala_R (fearful > neutral)
    c[1, 2] = 1.0  # endogenous_L -> amygdala_L
    c[2, 3] = 1.0  # endogenous_R -> amygdala_R
    return {
        "regions": list(DCM_REGIONS),
        "inputs": list(DCM_INPUTS),
        "A": a.tolist(),
        "B": b.tolist(),
        "C": c.tolist(),
        "transit": rng.normal(0.0, 0.05, 3).tolist(),
        "decay": float(rng.normal(0.0, 0.05)),
        "epsilon": float(rng.normal(0.0, 0.05)),
        "endogenous_sd": faces.endogenous_sd,
        "endogenous_smoothing_s": faces.endogenous_smoothing_s,
    }


def nearest_correlation(r: np.ndarray, min_eig: float = 0.02) -> np.ndarray:
    """Shrink the off-diagonal of a symmetric unit-diagonal matrix until min eigenvalue >= min_eig."""
    r = np.asarray(r, dtype=float)
    eye = np.eye(len(r))
    lam = 0.0
    out = r
    while np.linalg.eigvalsh(out).min() < min_eig:
        lam += 0.05
        out = (1.0 - lam) * r + lam * eye
    return out


def population_coupling(roi_names: list[str], vmpfc_amygdala: float) -> np.ndarray:
    """Population correlation matrix (n_roi x n_roi) of the resting neural fluctuations."""
    idx = {n: i for i, n in enumerate(roi_names)}
    r = np.eye(len(roi_names))
    pairs = dict(REST_PAIRS)
    pairs[("vmPFC", "amygdala_L")] = vmpfc_amygdala
    pairs[("vmPFC", "amygdala_R")] = vmpfc_amygdala
    for (p, q), v in pairs.items():
        if p in idx and q in idx:
            r[idx[p], idx[q]] = r[idx[q], idx[p]] = v
    return nearest_correlation(r)


def rest_coupling(population: np.ndarray, trait: np.ndarray) -> np.ndarray:
    """A subject's coupling: the correlation matrix of the draws ``trait`` (dof x n_roi, standard
    normal) mixed to the ``population`` correlation (Wishart(dof, population / dof), normalised)."""
    x = trait @ np.linalg.cholesky(population).T
    cov = x.T @ x
    d = np.sqrt(np.diag(cov))
    out = cov / np.outer(d, d)
    np.fill_diagonal(out, 1.0)
    return out


def ppi_modulation(dcm: dict, target: str = "vmPFC") -> dict:
    """The true strength of the PPIs on ``target``: the DCM's modulation of each seed -> target
    connection, per block type relative to shapes (Hz).

    A fearful block switches on ``faces`` and ``fearful``, a neutral block ``faces`` only, shapes
    neither, so the seed -> target coupling exceeds that during shapes by B_faces + B_fearful in
    fearful and by B_faces in neutral blocks. Seeds without a direct connection to the target
    (A = 0) are left out: their PPI on the target is indirect.
    """
    regions, inputs = dcm["regions"], dcm["inputs"]
    a, b = np.asarray(dcm["A"]), np.asarray(dcm["B"])
    to = regions.index(target)
    faces, fearful = inputs.index("faces"), inputs.index("fearful")
    seeds = {}
    for seed in ("amygdala_L", "amygdala_R"):
        frm = regions.index(seed)
        if a[to, frm] == 0:
            continue
        b_faces, b_fear = float(b[faces, to, frm]), float(b[fearful, to, frm])
        seeds[seed] = {"fearful": b_faces + b_fear, "neutral": b_faces, "fearful_minus_neutral": b_fear}
    return {"target": target, "seeds": seeds}


def draw_subject(rng: np.random.Generator, arm: str, roi_names: list[str],
                 rest_rng: np.random.Generator | None = None, faces: FacesModel = FacesModel(),
                 effect_scale: float = 1.0) -> dict:
    """Pre and post parameters of one subject plus the true change scores (post - pre).

    ``rest_rng`` draws the subject's resting-coupling trait (default: a child stream of
    ``rng``'s seed, so that the other parameters do not depend on it); ``faces`` sets the faces
    DCM's population (:class:`FacesModel`); ``effect_scale`` multiplies the arms' mean changes
    of :data:`CHANGE_MODEL` (0: no treatment effect on the circuit, the subjects' changes
    keep their spread; the same random draws for every scale).
    """
    missing = set(DCM_REGIONS + ["dACC", "rACC"]) - set(roi_names)
    if missing:
        raise ValueError(f"sphere table lacks the simulated ROIs {sorted(missing)}")
    change = _draw_change(rng, arm, effect_scale)
    b_pre = float(rng.normal(faces.b_fear_pre_mean, faces.b_fear_pre_sd))
    dcm_pre = _dcm_parameters(rng, b_pre, faces)
    dcm_post = _dcm_parameters(rng, b_pre + change["faces_B_fearful_amygdala_L_to_vmPFC"], faces)
    # connectivity and haemodynamics are subject traits: only B changes between sessions
    for key in ("A", "C", "transit", "decay", "epsilon"):
        dcm_post[key] = dcm_pre[key]

    faces_act = {
        roi: {k: float(v * np.exp(rng.normal(0.0, 0.15))) for k, v in conds.items()}
        for roi, conds in FACES_ACTIVATION.items()
        if roi in roi_names
    }
    # conflict amplitudes are per unit 1-s event regressor (peak about 0.2 per trial)
    dacc_con = float(rng.normal(1.0, 0.2))
    dacc_diff_pre = float(rng.normal(1.8, 0.3))
    dacc_diff_post = dacc_diff_pre + change["conflict_dACC_incongruent_minus_congruent"]
    racc = {
        "congruent": float(rng.normal(0.4, 0.1)),
        "cI": float(rng.normal(0.6, 0.15)),
    }
    racc["iI"] = racc["cI"] + float(rng.normal(1.4, 0.25))
    amy_conflict = {"congruent": 0.4, "cI": 1.4, "iI": 0.6}

    def conflict(diff: float) -> dict:
        inc = dacc_con + diff
        amp = {
            "dACC": {"congruent": dacc_con, "cI": inc, "iI": inc},
            "rACC": dict(racc),
        }
        for roi in ("amygdala_L", "amygdala_R"):
            amp[roi] = dict(amy_conflict)
        return amp

    rest_pre = float(rng.normal(0.15, 0.06))
    rest_post = rest_pre + change["rest_vmPFC_amygdala_coupling"]
    if rest_rng is None:
        rest_rng = np.random.default_rng(rng.bit_generator.seed_seq.spawn(1)[0])
    trait = rest_rng.standard_normal((REST_TRAIT_DOF, len(roi_names)))
    population = {"pre": population_coupling(roi_names, rest_pre),
                  "post": population_coupling(roi_names, rest_post)}
    coupling = {"pre": rest_coupling(population["pre"], trait)}
    # the treatment changes vmPFC - amygdala only (shrunk, rarely, if that breaks definiteness)
    coupling["post"] = nearest_correlation(coupling["pre"] + population["post"] - population["pre"])
    sessions = {}
    for ses, dcm, diff in (("pre", dcm_pre, dacc_diff_pre), ("post", dcm_post, dacc_diff_post)):
        sessions[ses] = {
            "faces": {"dcm": dcm, "activation": faces_act, "ppi_modulation": ppi_modulation(dcm)},
            "conflict": {"activation": conflict(diff)},
            "rest": {
                "roi_order": list(roi_names),
                "coupling": coupling[ses].tolist(),
                "amplitude_percent": REST_AMPLITUDE,
            },
        }
    # store the realised change (differs from the drawn one only if a matrix had to be shrunk)
    v, a_l = roi_names.index("vmPFC"), roi_names.index("amygdala_L")
    change["rest_vmPFC_amygdala_coupling"] = (
        sessions["post"]["rest"]["coupling"][v][a_l] - sessions["pre"]["rest"]["coupling"][v][a_l]
    )
    return {"sessions": sessions, "change": change}

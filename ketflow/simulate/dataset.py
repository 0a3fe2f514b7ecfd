"""Write a simulated raw BIDS dataset, fMRIPrep-style derivatives and the ground truth.

Random streams: ``seed`` seeds independent NumPy generators per purpose (group allocation,
each subject's parameters, each subject's resting-coupling trait, each run's data), so a
subject's data do not depend on how many subjects are simulated after it, and the same
arguments give byte-identical files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ketflow import __version__
from ketflow.simulate import bids
from ketflow.simulate.clinical import clinical_model, draw_scores
from ketflow.simulate.confounds import confounds_table
from ketflow.signal.rois import voxel_centres_mm
from ketflow.simulate import dropout as susceptibility
from ketflow.simulate.design import conflict_events, faces_events
from ketflow.simulate.grid import Anatomy, build_anatomy
from ketflow.simulate.parameters import REST_STRONGEST_PAIR, FacesModel, draw_subject
from ketflow.simulate.signals import (
    MICROTIME,
    conflict_regressors,
    conflict_signals,
    faces_regressors,
    faces_signals,
    noise_free_betas,
    noise_free_ppi,
    rest_signals,
)
from ketflow.simulate.volume import ArtefactSettings, roi_labels, simulate_volume
from ketflow.simulate.writer import (
    SCANNER_XFORM_CODE,
    nifti_bytes,
    write_bytes,
    write_json,
    write_tsv,
)

ARMS = ("ketamine", "midazolam")
SESSIONS = ("pre", "post")
TASKS = ("faces", "conflict", "rest")
#: Volumes per run at the default TR of 2 s: 5 min task runs and an 8 min resting run, long
#: enough for a band-passed (0.01-0.1 Hz) 36P denoising model to keep residual degrees of freedom.
DEFAULT_VOLUMES = {"faces": 150, "conflict": 150, "rest": 240}


def _volumes(n_volumes) -> dict:
    if isinstance(n_volumes, dict):
        return {t: int(n_volumes.get(t, DEFAULT_VOLUMES[t])) for t in TASKS}
    return {t: int(n_volumes) for t in TASKS}


def _roi_truth(anat: Anatomy, attenuation: np.ndarray | None) -> list[dict]:
    """Each ROI's placement: source, voxel count and centroid (mm), mean signal kept (dropout)."""
    xyz = voxel_centres_mm(anat.shape, anat.affine)
    kept = np.ones(anat.shape) if attenuation is None else np.zeros(anat.shape)
    if attenuation is not None:
        kept[anat.brain] = attenuation
    return [{"name": name, "source": "ketflow circuit atlas (tpl-MNI152NLin2009cAsym_atlas-circuit), "
                                     "majority vote on the grid",
             "n_voxels": int(mask.sum()), "centroid_mm": np.round(xyz[mask].mean(axis=0), 2).tolist(),
             "mean_signal_kept": round(float(kept[mask].mean()), 4)}
            for name, mask in anat.rois.items()]


def _write_anatomy(out: Path, anat: Anatomy, roi_names: list[str]) -> None:
    """The simulator's ROI placement (``sourcedata/truth/desc-rois_dseg``: where the signals are)."""
    labels = np.zeros(anat.shape, dtype=np.uint8)
    for value, name in enumerate(roi_names, start=1):
        labels[anat.rois[name]] = value
    truth = out / "sourcedata" / "truth"
    write_bytes(truth / "desc-rois_dseg.nii.gz", nifti_bytes(labels, anat.affine, np.uint8))
    write_tsv(truth / "desc-rois_dseg.tsv",
              pd.DataFrame({"index": range(1, len(roi_names) + 1), "name": roi_names}))


def gm_probseg(anat: Anatomy) -> np.ndarray:
    """fMRIPrep-style grey-matter probability on the grid: the template's, adjusted so that it
    exceeds 0.5 exactly on the simulator's grey-matter compartment (which includes every ROI
    voxel); 0 outside the brain."""
    p = np.where(anat.gm, np.maximum(anat.p_gm, 0.51), np.minimum(anat.p_gm, 0.5))
    return np.where(anat.brain, p, 0.0).astype(np.float32)


def _allocation(n_subjects: int, seed: int) -> list[str]:
    arms = [ARMS[i % 2] for i in range(n_subjects)]
    return [str(a) for a in np.random.default_rng([seed, 0]).permutation(arms)]


class _Run:
    """Simulates and writes one run; returns its run-level truth."""

    def __init__(self, out: Path, anat: Anatomy, roi_index: dict, tr: float, noise: float,
                 artefacts: ArtefactSettings, res_entity: bool, voxel_size: float,
                 attenuation: np.ndarray | None = None):
        self.out, self.anat, self.roi_index = out, anat, roi_index
        self.tr, self.noise, self.artefacts = tr, noise, artefacts
        self.attenuation = attenuation
        self.space = f"space-{bids.SPACE}" + (f"_res-{voxel_size:g}" if res_entity else "")
        self.slice_times = bids.slice_timing(anat.shape[2], tr)
        self.start = bids.start_time(self.slice_times)
        self.brain = anat.brain.ravel()
        self.mask_bytes = nifti_bytes(anat.brain, anat.affine, np.uint8)
        self.gm_probseg = nifti_bytes(gm_probseg(anat), anat.affine, np.float32)
        self.tissue = {k: getattr(anat, k).ravel()[self.brain] for k in ("csf", "wm")}

    def __call__(self, sub: str, ses: str, task: str, truth: dict, n_scans: int,
                 rng: np.random.Generator) -> dict:
        prefix = bids.run_prefix(sub, ses, task)
        raw_dir = self.out / f"sub-{sub}" / f"ses-{ses}" / "func"
        der_dir = self.out / "derivatives" / "fmriprep" / f"sub-{sub}" / f"ses-{ses}" / "func"
        run_truth: dict = {"n_volumes": n_scans}
        extra = {}
        if task == "faces":
            events = faces_events(n_scans, self.tr, rng)
            signals, u = faces_signals(events, truth, n_scans, self.tr, self.start, rng)
            run_truth["ppi_noise_free"] = {
                "target": "vmPFC",
                "seeds": noise_free_ppi(signals, u, events, truth["dcm"], n_scans, self.tr,
                                        self.start),
            }
            rows = np.arange(n_scans) * MICROTIME + round(self.start / (self.tr / MICROTIME))
            extra = {f"input_{name}": u[rows, j] for j, name in enumerate(truth["dcm"]["inputs"])}
            run_truth["glm_noise_free"] = noise_free_betas(
                signals, faces_regressors(events, n_scans, self.tr, self.start))
        elif task == "conflict":
            events = conflict_events(n_scans, self.tr, rng)
            signals = conflict_signals(events, truth, n_scans, self.tr, self.start)
            run_truth["glm_noise_free"] = noise_free_betas(
                signals, conflict_regressors(events, n_scans, self.tr, self.start))
        else:
            events = None
            signals = rest_signals(truth, n_scans, self.tr, self.start, rng)
            names = truth["roi_order"]
            run_truth["noise_free_correlation"] = np.corrcoef(
                np.array([signals[n] for n in names])
            ).tolist()
        vol = simulate_volume(self.anat, self.roi_index, signals, n_scans, self.tr, self.noise,
                              self.artefacts, rng, self.attenuation)
        brain_data = vol.data.reshape(-1, n_scans)[self.brain]
        conf, meta = confounds_table(brain_data, self.tissue, vol.motion, vol.n_dummy, self.tr)

        aff = self.anat.affine
        write_bytes(raw_dir / f"{prefix}_bold.nii.gz",
                    nifti_bytes(np.round(vol.data), aff, np.int16, self.tr, SCANNER_XFORM_CODE))
        write_json(raw_dir / f"{prefix}_bold.json",
                   bids.bold_sidecar(task, self.tr, self.slice_times))
        if events is not None:
            write_tsv(raw_dir / f"{prefix}_events.tsv", events)
        write_bytes(der_dir / f"{prefix}_{self.space}_desc-preproc_bold.nii.gz",
                    nifti_bytes(vol.data, aff, np.float32, self.tr))
        write_json(der_dir / f"{prefix}_{self.space}_desc-preproc_bold.json",
                   bids.preproc_sidecar(task, self.tr, self.start))
        write_bytes(der_dir / f"{prefix}_{self.space}_desc-brain_mask.nii.gz", self.mask_bytes)
        boldref = vol.data[..., vol.n_dummy:].mean(axis=-1)
        write_bytes(der_dir / f"{prefix}_{self.space}_boldref.nii.gz",
                    nifti_bytes(boldref, aff, np.float32))
        write_tsv(der_dir / f"{prefix}_desc-confounds_timeseries.tsv", conf)
        write_json(der_dir / f"{prefix}_desc-confounds_timeseries.json", meta)

        series = pd.DataFrame({**{k: np.asarray(signals.get(k, np.zeros(n_scans)))
                                  for k in self.roi_index}, **extra})
        write_tsv(bids.noise_free_timeseries(self.out, sub, ses, task), series)
        run_truth.update({
            "n_dummy_volumes": vol.n_dummy,
            "spike_volumes": vol.spikes,
            "mean_framewise_displacement": float(np.nanmean(conf["framewise_displacement"])),
            "slice_timing_reference_s": self.start,
        })
        return run_truth


def simulate_dataset(out_dir, n_subjects: int = 8, seed: int = 0, voxel_size: float = 4.0,
                     tr: float = 2.0, n_volumes=DEFAULT_VOLUMES, noise: float = 1.0,
                     artefacts: bool = True, interaction: bool = True,
                     res_entity: bool = False, tasks=TASKS, effect_scale: float = 1.0,
                     dropout: bool = False) -> Path:
    """Simulate the trial and write it to ``out_dir``; returns the dataset root.

    Parameters
    ----------
    out_dir : path
        Output directory (created; existing files of the same names are overwritten).
    n_subjects : int
        Participants, allocated to ketamine and midazolam in balanced random order.
    seed : int
        Seed of every random draw.
    voxel_size : float
        Isotropic voxel size (mm) of the MNI152NLin2009cAsym grid (2 gives fMRIPrep's res-2).
    tr : float
        Repetition time (s).
    n_volumes : int or dict
        Volumes per run, for every task or per task name (faces, conflict, rest; a task missing
        from the dict gets its ``DEFAULT_VOLUMES`` entry).
    noise : float
        Voxel noise SD in percent signal change (also scales physiological noise).
    artefacts : bool
        Head motion, spikes, global signal, drift and non-steady-state volumes.
    interaction : bool
        Whether the clinical model includes the arm x imaging-change interaction.
    effect_scale : float
        Multiplies the arms' mean imaging changes (``parameters.CHANGE_MODEL``; 0: studies with
        no treatment effect on the circuit).
    res_entity : bool
        Add ``res-<voxel_size>`` to the derivative image names.
    tasks : sequence of str
        Tasks whose runs are written (default all of ``TASKS``). Every run has its own random
        stream, so a run's data do not depend on which other tasks are simulated; the ground
        truth lists only the simulated tasks.
    dropout : bool
        Susceptibility signal loss in orbitofrontal/ventromedial PFC and the medial temporal
        lobes (:mod:`ketflow.simulate.dropout`): lower mean intensity and tSNR there.
    """
    if n_subjects < 2:
        raise ValueError("n_subjects must be at least 2 (one per arm)")
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown or not tasks:
        raise ValueError(f"tasks must be a non-empty subset of {list(TASKS)}, got {list(tasks)}")
    tasks = [t for t in TASKS if t in tasks]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vols = _volumes(n_volumes)
    arguments = {"n_subjects": int(n_subjects), "seed": int(seed), "voxel_size": float(voxel_size),
                 "tr": float(tr), "n_volumes": vols, "noise": float(noise),
                 "artefacts": bool(artefacts), "interaction": bool(interaction),
                 "res_entity": bool(res_entity), "tasks": tasks, "effect_scale": float(effect_scale),
                 "dropout": bool(dropout)}
    anat = build_anatomy(voxel_size)
    roi_names = list(anat.rois)
    roi_index = roi_labels(anat)
    attenuation = (susceptibility.susceptibility_attenuation(anat.affine, anat.shape)[anat.brain]
                   if dropout else None)
    art = ArtefactSettings(enabled=bool(artefacts))
    clin = clinical_model(interaction)
    run = _Run(out, anat, roi_index, tr, noise, art, res_entity, voxel_size, attenuation)
    _write_anatomy(out, anat, roi_names)
    arms = _allocation(n_subjects, seed)

    participants, subjects = [], {}
    t1 = nifti_bytes(np.round(1000.0 * anat.t1), anat.affine, np.int16,
                     xform_code=SCANNER_XFORM_CODE)
    for i, arm in enumerate(arms):
        sub = f"{i + 1:02d}"
        prng = np.random.default_rng([seed, 1, i])
        params = draw_subject(prng, arm, roi_names, rest_rng=np.random.default_rng([seed, 3, i]),
                              effect_scale=effect_scale)
        scores = draw_scores(prng, clin, arm, params["change"])
        age, sex = int(prng.integers(20, 66)), str(prng.choice(["F", "M"]))
        participants.append({"participant_id": f"sub-{sub}", "age": age, "sex": sex,
                             "group": arm})
        write_tsv(out / f"sub-{sub}" / f"sub-{sub}_sessions.tsv", pd.DataFrame({
            "session_id": [f"ses-{s}" for s in SESSIONS],
            "caps5_total": [scores["caps5_total"][s] for s in SESSIONS],
            "madrs_total": [scores["madrs_total"][s] for s in SESSIONS],
        }))
        write_bytes(out / f"sub-{sub}" / "ses-pre" / "anat" / f"sub-{sub}_ses-pre_T1w.nii.gz", t1)
        write_bytes(out / "derivatives" / "fmriprep" / f"sub-{sub}" / "anat" /
                    f"sub-{sub}_{run.space}_label-GM_probseg.nii.gz", run.gm_probseg)
        for si, ses in enumerate(SESSIONS):
            for ti, task in enumerate(TASKS):
                if task not in tasks:
                    del params["sessions"][ses][task]
                    continue
                rrng = np.random.default_rng([seed, 2, i, si, ti])
                task_truth = params["sessions"][ses][task]
                task_truth["run"] = run(sub, ses, task, task_truth, vols[task], rrng)
        subjects[f"sub-{sub}"] = {
            "group": arm, "age": age, "sex": sex,
            "sessions": params["sessions"],
            "change": params["change"],
            "clinical": {**scores, "change": {k: v["post"] - v["pre"] for k, v in scores.items()}},
        }

    write_json(out / "dataset_description.json", bids.raw_dataset_description(n_subjects))
    write_bytes(out / "README", bids.readme(n_subjects, __version__).encode())
    write_bytes(out / ".bidsignore", b"ground_truth.json\n")
    write_tsv(out / "participants.tsv", pd.DataFrame(participants))
    write_json(out / "participants.json", bids.participants_sidecar())
    write_json(out / "sessions.json", bids.sessions_sidecar())
    for task in (t for t in ("faces", "conflict") if t in tasks):
        write_json(out / f"task-{task}_events.json", bids.events_sidecar(task))
    write_json(out / "derivatives" / "fmriprep" / "dataset_description.json",
               bids.derivatives_description(__version__))
    truth = {
        "generator": {"name": "ketflow.simulate", "version": __version__},
        "arguments": arguments,
        "seed": int(seed),
        "units": {
            "dcm": "SPM12 parameterisation: A off-diagonal, B and C in Hz (C acts on input/16), "
                   "A diagonal log self-inhibition (rate exp(A_ii)/2 Hz); transit, decay, "
                   "epsilon log-deviations from SPM defaults",
            "activation": "percent signal change per unit ketflow first-level regressor "
                          "(SPM canonical HRF, unit-sum kernel)",
            "coupling": "correlation of the ROI neural fluctuations (equals the expected "
                        "correlation of the noise-free BOLD)",
            "glm_noise_free": "OLS betas of the noise-free ROI signals on ketflow's condition "
                              "regressors and a constant (equal to the activation amplitudes "
                              "for non-DCM ROIs; the effective activation of DCM ROIs)",
            "ppi_noise_free": "gPPI interaction betas of noise-free vmPFC BOLD on the seed "
                              "neuronal state x condition (percent per unit state)",
            "ppi_modulation": "true PPI strength: the DCM's modulation of the seed -> vmPFC "
                              "connection in each block type relative to shapes (Hz)",
            "change": "post minus pre of the named measure",
        },
        "grid": {"space": bids.SPACE, "voxel_size_mm": float(voxel_size),
                 "shape": list(anat.shape), "affine": anat.affine.tolist(),
                 "n_brain_voxels": int(anat.brain.sum()),
                 "roi_voxels": {k: len(v) for k, v in roi_index.items()}},
        "rois": _roi_truth(anat, attenuation),
        "dropout": susceptibility.as_dict() if dropout else None,
        "rest_strongest_pair": list(REST_STRONGEST_PAIR),
        **({"faces_model": FacesModel().as_dict()} if "faces" in tasks else {}),
        "clinical_model": clin,
        "artefacts": art.as_dict(),
        "noise": {"voxel_sd_percent": float(noise), "voxel_ar1": 0.3},
        "subjects": subjects,
    }
    write_json(out / "ground_truth.json", truth)
    return out

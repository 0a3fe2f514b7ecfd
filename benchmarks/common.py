"""Helpers the benchmarks share.

Benchmarks import this module by name (``from common import ...``): running
``python benchmarks/<name>.py`` puts this folder first on ``sys.path``.

* :func:`run_stage`: run one of ketflow's stage workflows on its own (as the tests do);
* :func:`prepare_task_run`: a simulated task run's ROIs, confound regressors, percent-scaled
  data and task design, made by the participant workflow's own stages;
* :func:`make_inputs`: a full-size synthetic run (2 mm MNI grid) written once;
* :func:`simulated_study`: the group level's input tables from the simulator's per-subject truth
  (:mod:`ketflow.simulate.features`) and :func:`fit_study`, the group model fitted to them.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from ketflow import templates
from ketflow.config import AnalysisConfig
from ketflow.io.confounds import MOTION_6, TISSUE_3, expansions
from ketflow.signal.rois import read_sphere_table, spheres_roiset

TR = 2.0


def run_stage(workflow, base_dir: Path, **inputs) -> dict:
    """Run a stage workflow with these ``inputnode`` values; node name -> its outputs."""
    for name, value in inputs.items():
        setattr(workflow.inputs.inputnode, name, value)
    workflow.base_dir = str(base_dir)
    graph = workflow.run(plugin="Linear")
    return {node.name: node.result.outputs for node in graph.nodes()}


def prepare_task_run(files: dict, config: AnalysisConfig, task: str, work: Path, percent_data: bool = True) -> dict:
    """ROIs on the run's grid and its task-model data, as the participant workflow makes them.

    ``files``: a run of :func:`ketflow.simulate.bids.run_files`.  Returns ``labels``,
    ``labels_tsv``, ``bold_cache``, ``regressors`` (confound regressors with censoring spikes),
    ``percent_bold`` and ``task_design`` (files; None without ``percent_data``).
    """
    from ketflow.workflows.bold.data import init_task_data_wf
    from ketflow.workflows.bold.rois import init_rois_wf

    n_volumes = nib.load(files["bold"]).shape[3]
    rois = run_stage(init_rois_wf(config.circuit), work, bold_ref=files["boldref"], brain_mask=files["mask"])["rois"]
    data_wf = init_task_data_wf(config.tasks[task], config.glm, config.denoising, tr=files["tr"],
                                start_time=files["start_time"], n_volumes=n_volumes, percent_data=percent_data,
                                mem_gb=1.0)
    data = run_stage(data_wf, work, brain_mask=files["mask"], confounds_tsv=files["confounds"],
                     confounds_json=files["confounds_json"], events_file=files["events"],
                     bold_cache=_cache(files, work))
    return {"mask": files["mask"], "labels": rois.labels_file, "labels_tsv": rois.labels_tsv,
            "bold_cache": _cache(files, work),
            "regressors": data["glm_confounds"].regressors_tsv,
            "percent_bold": data["task_data"].percent_bold if percent_data else None,
            "task_design": data["task_data"].task_design if percent_data else None}


def gppi_roi_signals(prep: dict, signal: str) -> pd.DataFrame:
    """The ROI signals the gPPI node forms (``mean`` or ``eigenvariate``) from a run's percent-scaled
    data (:func:`prepare_task_run`)."""
    from ketflow.io.boldcache import read_mask
    from ketflow.io.design import load_task_design
    from ketflow.io.rois import read_labels
    from ketflow.signal.gppi import nuisance_columns, ppi_roi_signals

    labels, names = read_labels(prep["labels"], prep["labels_tsv"], read_mask(prep["mask"]))
    design = load_task_design(prep["task_design"])
    inside = np.flatnonzero(labels > 0)
    data = np.load(prep["percent_bold"], mmap_mode="r")
    return ppi_roi_signals(np.asarray(data[:, inside]), labels[inside], names, signal,
                           design.matrix[nuisance_columns(design)].to_numpy())


def _cache(files: dict, work: Path) -> str:
    """The run's in-mask BOLD cache (written once into ``work``)."""
    from ketflow.io.boldcache import cache_name, read_mask, write_bold_cache

    out = Path(work) / cache_name(files["bold"])
    if not out.exists():
        write_bold_cache(files["bold"], read_mask(files["mask"]), out)
    return str(out)


def make_inputs(workdir: Path, n_volumes: int) -> dict[str, Path]:
    """Write the synthetic BOLD, mask, labels and confounds once (reused when present)."""
    workdir.mkdir(parents=True, exist_ok=True)
    paths = {k: workdir / f"{k}{ext}" for k, ext in
             [("bold", ".nii.gz"), ("mask", ".nii.gz"), ("labels", ".nii.gz"), ("confounds", ".tsv")]}
    if all(p.exists() for p in paths.values()):
        return paths
    mask_img = nib.load(templates.get_template(resolution=2, suffix="mask", desc="brain"))
    mask = np.asanyarray(mask_img.dataobj) > 0
    nib.Nifti1Image(mask.astype(np.uint8), mask_img.affine).to_filename(paths["mask"])
    roiset = spheres_roiset(read_sphere_table(), mask.shape, mask_img.affine, mask, min_voxels=10)
    nib.Nifti1Image(roiset.labels.astype(np.int16), mask_img.affine).to_filename(paths["labels"])
    rng = np.random.default_rng(0)
    columns = expansions(MOTION_6) + expansions(TISSUE_3)
    conf = pd.DataFrame(rng.normal(size=(n_volumes, len(columns))), columns=columns)
    fd = np.abs(rng.normal(size=n_volumes)) * 0.2
    fd[[50, 120, 121]] = 1.0
    conf["framewise_displacement"] = fd
    conf.to_csv(paths["confounds"], sep="\t", index=False, na_rep="n/a")
    bold = np.zeros(mask.shape + (n_volumes,), dtype=np.float32)
    weights = rng.normal(size=(len(columns), int(mask.sum()))).astype(np.float32) * 0.3
    signal = 500 + rng.normal(size=(n_volumes, int(mask.sum()))).astype(np.float32) * 5
    signal += conf[columns].to_numpy(np.float32) @ weights
    bold[mask] = signal.T
    nib.Nifti1Image(bold, mask_img.affine).to_filename(paths["bold"])
    return paths


#: Model settings of the group fits of simulated studies (those of tests/test_group_simulator_truth.py).
STUDY_SETTINGS = {"l1_ratios": [0.5, 0.9, 1.0], "n_alphas": 30, "refit_inner_folds": None, "inner_folds": 5,
                  "outer_folds": 5, "n_permutations": 40,
                  "n_selection_bootstrap": 50, "seed": 0}


def fit_study(model: dict, n: int, seed: int, interaction: bool = True, error_sd: dict | None = None):
    """The group model (change scores -> CAPS-5 change) evaluated on a simulated study of ``n``
    subjects (:func:`ketflow.simulate.features.simulated_feature_study`); ``model`` overrides settings."""
    from ketflow.group.features import build_feature_table
    from ketflow.group.models import select_model_data
    from ketflow.group.predict import evaluate
    from ketflow.simulate.features import DEMO_ERROR_SD, simulated_feature_study

    measures, clinical, participants = simulated_feature_study(n, seed, interaction=interaction,
                                                               error_sd=error_sd or DEMO_ERROR_SD)
    table = build_feature_table(measures, clinical, participants, arm="group")
    config = {"outcome": "caps5_total__change", "predictors": "change", "arm": "group",
              "arm_levels": ["midazolam", "ketamine"], **STUDY_SETTINGS, **model}
    data = select_model_data(config, table.table, table.dictionary)
    if not data.can_run:
        raise ValueError(f"the simulated study of {n} subjects cannot be fitted: {data}")
    return evaluate(data.table, data.config.spec, **data.config.evaluate_kwargs)

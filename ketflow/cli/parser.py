"""The BIDS-App command line (fMRIPrep / XCP-D conventions).

``ketflow bids_dir output_dir {participant,group} [options]``.  Argument errors exit with
status 2 (argparse's convention, as fMRIPrep).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import yaml

from .. import __version__
from ..config import SLOPPY_GROUP, SLOPPY_INFERENCE_PERMUTATIONS, Denoising, Override, parse_atlas_option
from ..io.confounds import STRATEGIES as DENOISING_STRATEGIES

#: Keys of a ``--bids-filter-file`` that ketflow reads (companion files follow the BOLD's entities).
USED_FILTER_KEYS = ("bold",)

NIPYPE_PLUGINS = ("Linear", "MultiProc", "LegacyMultiProc", "SLURM", "SLURMGraph", "SGE", "SGEGraph",
                  "PBS", "PBSGraph", "LSF", "Condor", "CondorDAGMan", "OAR")


def _existing_dir(value: str) -> Path:
    path = Path(value).expanduser().resolve()
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{value}: no such directory")
    return path


def _existing_file(value: str) -> Path:
    path = Path(value).expanduser().resolve()
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{value}: no such file")
    return path


def _derivative(value: str) -> tuple[str, Path]:
    name, sep, path = value.partition("=")
    if not sep:  # a bare path: its folder name is its name (as fMRIPrep's --derivatives)
        name, path = Path(value).name, value
    return name, _existing_dir(path)


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return number


def _non_negative_float(value: str) -> float:
    number = float(value)
    if not number >= 0:
        raise argparse.ArgumentTypeError(f"must be zero or positive, got {value}")
    return number


def _positive_float(value: str) -> float:
    number = float(value)
    if number <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return number


def load_structured_file(path: Path, what: str) -> dict:
    """Read a JSON or YAML mapping; ``ValueError`` names the file when it is malformed."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ValueError(f"{path}: cannot read the {what} ({err})") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path}: the {what} must be a JSON/YAML mapping")
    return data


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ketflow",
        description=(
            "ketflow: fear/emotion-regulation circuit measures after fMRIPrep (ROI signals, task GLM, "
            "gPPI, resting connectivity, DCM) and group-level prediction of clinical change."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("bids_dir", type=_existing_dir, help="the raw BIDS dataset")
    parser.add_argument("output_dir", type=Path, help="where the BIDS-Derivatives outputs go")
    parser.add_argument("analysis_level", choices=["participant", "group"], help="processing stage")
    parser.add_argument("--version", action="version", version=f"ketflow {__version__}")

    sel = parser.add_argument_group("Selecting data")
    sel.add_argument("--participant-label", "--participant_label", nargs="+", metavar="LABEL",
                     help="subjects to process (with or without 'sub-'); default: all")
    sel.add_argument("--session-label", nargs="+", metavar="LABEL",
                     help="sessions to process (with or without 'ses-'); default: all")
    sel.add_argument("-t", "--task", "--task-id", dest="task", nargs="+", metavar="TASK",
                     help="only these configured tasks; default: every task of the configuration")
    sel.add_argument("-d", "--derivatives", nargs="+", type=_derivative, metavar="NAME=PATH",
                     help="derivative datasets; 'fmriprep=PATH' names fMRIPrep's "
                          "(default: BIDS_DIR/derivatives/fmriprep)")
    sel.add_argument("--space", default="MNI152NLin2009cAsym",
                     help="output space of the fMRIPrep BOLD to use")
    sel.add_argument("--bids-filter-file", type=_existing_file, metavar="FILE",
                     help="JSON/YAML file of pybids filters, e.g. {\"bold\": {\"res\": \"2\"}}")
    sel.add_argument("--skip-bids-validation", "--skip_bids_validation", action="store_true",
                     help="do not run the BIDS validator on the input dataset")

    cfg = parser.add_argument_group("Analysis")
    cfg.add_argument("--config", type=_existing_file, metavar="FILE",
                     help="analysis configuration (YAML/JSON); default: the packaged reference-study config")
    xcpd = parser.add_argument_group(
        "Overrides for this run (XCP-D's options)",
        "Each sets one field of the configuration and is recorded in logs/config.json "
        "(command_line_overrides) and the methods text. An option that contradicts a field the --config "
        "file sets is an error.")
    xcpd.add_argument("--fd-thresh", type=_non_negative_float, metavar="MM",
                      help="framewise-displacement censoring threshold in mm (denoising.fd_threshold); 0: no "
                           "FD censoring")
    xcpd.add_argument("-p", "--nuisance-regressors", metavar="NAME|FILE",
                      help=f"resting-state denoising strategy: one of {', '.join(DENOISING_STRATEGIES)} "
                           "(denoising.strategy), or a YAML file of denoising fields")
    xcpd.add_argument("--min-time", type=_non_negative_float, metavar="SECONDS",
                      help="least usable data after censoring, in seconds (denoising.min_time_s); runs with "
                           "less are excluded; 0: volumes only (denoising.min_volumes)")
    xcpd.add_argument("--smoothing", type=_non_negative_float, metavar="FWHM",
                      help="Gaussian smoothing in mm FWHM of the first-level maps of the voxelwise group "
                           "analysis (group.voxelwise.smoothing_fwhm; ketflow smooths nowhere else); 0: none")
    xcpd.add_argument("--atlases", nargs="+", metavar="ATLAS",
                      help="atlases measured beside the circuit in every run (atlases): LABEL for a packaged "
                           "atlas (circuit), LABEL=FOLDER for a BEP038 atlas dataset (tpl-<space>_atlas-<LABEL>"
                           "_dseg.nii.gz + .tsv), LABEL=FILE for a dseg on the runs' grid (its .tsv beside it); "
                           "outputs are named atlas-<LABEL>")

    perf = parser.add_argument_group("Performance and execution")
    perf.add_argument("-w", "--work-dir", type=Path, default=Path("work"),
                      help="Nipype working directory; reruns resume from it")
    perf.add_argument("--nprocs", "--n-cpus", "--nthreads", dest="nprocs", type=_positive_int,
                      default=os.cpu_count() or 1, help="maximum number of processes")
    perf.add_argument("--omp-nthreads", type=_positive_int, default=1,
                      help="maximum threads per process")
    perf.add_argument("--mem-gb", "--mem", dest="mem_gb", type=_positive_float,
                      help="memory limit in GB for the MultiProc scheduler")
    perf.add_argument("--plugin", choices=NIPYPE_PLUGINS, default="MultiProc",
                      help="Nipype execution plugin")
    perf.add_argument("--plugin-args", type=_existing_file, metavar="FILE",
                      help="JSON/YAML file of Nipype plugin arguments (e.g. sbatch_args)")
    perf.add_argument("--stop-on-first-crash", action="store_true",
                      help="stop at the first failing node instead of running what remains")
    perf.add_argument("--clean-workdir", action="store_true",
                      help="remove ketflow's folders from the work directory after a successful run (as "
                           "fMRIPrep; a rerun then starts from scratch)")

    grp = parser.add_argument_group("Group level")
    grp.add_argument("--participant-config-hash", metavar="HASH",
                     help="use only participant outputs made with this configuration (a prefix of its SHA-256, "
                          "ConfigHash in the sidecars); by default outputs of different configurations are refused")
    grp.add_argument("--participant-version", metavar="VERSION",
                     help="use only participant outputs made with this ketflow version; by default outputs of "
                          "different versions are refused")

    other = parser.add_argument_group("Other")
    other.add_argument("--reports-only", action="store_true",
                       help="only rebuild the HTML reports from existing outputs")
    other.add_argument("--boilerplate-only", "--boilerplate_only", action="store_true",
                       help="only write the methods boilerplate (logs/CITATION.md)")
    other.add_argument("--sloppy", action="store_true",
                       help="TESTING ONLY (as fMRIPrep's --sloppy): at the group level, cut the resampling to "
                            f"at most {SLOPPY_GROUP['n_permutations']} permutations, "
                            f"{SLOPPY_GROUP['n_bootstrap']} bootstraps and {SLOPPY_GROUP['n_alphas']} penalties "
                            f"per mixing value, and the trial inference's FWE test to {SLOPPY_INFERENCE_PERMUTATIONS} "
                            "permutations, so that a demo runs in minutes; p-values and selection "
                            "frequencies are then too coarse to report")
    other.add_argument("-v", "--verbose", action="count", default=0,
                       help="more log output (-v, -vv)")
    return parser


def config_overrides(opts: argparse.Namespace) -> list[Override]:
    """The configuration fields the XCP-D-style options set (:func:`ketflow.config.load_config`).

    Raises ValueError naming the ``--nuisance-regressors`` file or its field when it is not a
    mapping of denoising fields.
    """
    overrides = []
    if opts.fd_thresh is not None:
        overrides.append(Override("--fd-thresh", "denoising.fd_threshold", opts.fd_thresh or None))
    if opts.nuisance_regressors is not None:
        if opts.nuisance_regressors in DENOISING_STRATEGIES:
            overrides.append(Override("--nuisance-regressors", "denoising.strategy", opts.nuisance_regressors))
        elif Path(opts.nuisance_regressors).is_file():
            path = Path(opts.nuisance_regressors).resolve()
            fields = load_structured_file(path, "denoising strategy")
            unknown = sorted(set(fields) - set(Denoising.model_fields))
            if unknown:
                raise ValueError(f"{path}: {unknown} are not denoising fields; known: {sorted(Denoising.model_fields)}")
            overrides += [Override(f"--nuisance-regressors {path}", f"denoising.{key}", value)
                          for key, value in fields.items()]
        else:
            raise ValueError(f"--nuisance-regressors {opts.nuisance_regressors}: neither a packaged strategy "
                             f"({', '.join(DENOISING_STRATEGIES)}) nor a file")
    if opts.min_time is not None:
        overrides.append(Override("--min-time", "denoising.min_time_s", opts.min_time or None))
    if opts.smoothing is not None:
        overrides.append(Override("--smoothing", "group.voxelwise.smoothing_fwhm", opts.smoothing))
    if opts.atlases:
        overrides.append(Override("--atlases", "atlases",
                                  [parse_atlas_option(entry).model_dump(mode="json") for entry in opts.atlases]))
    return overrides


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and cross-check arguments; argument errors exit with status 2."""
    parser = build_parser()
    opts = parser.parse_args(argv)
    opts.output_dir = opts.output_dir.expanduser().resolve()
    opts.work_dir = opts.work_dir.expanduser().resolve()
    problem = output_dir_problem(opts.output_dir, opts.bids_dir)
    if problem:
        parser.error(problem)
    if opts.output_dir.exists() and not opts.output_dir.is_dir():
        parser.error(f"output_dir {opts.output_dir} exists and is not a directory")
    for problem in label_problems(opts.bids_dir, opts.participant_label, opts.session_label):
        parser.error(problem)
    derivatives = dict(opts.derivatives or [])
    if "fmriprep" not in derivatives:
        derivatives["fmriprep"] = (opts.bids_dir / "derivatives" / "fmriprep").resolve()
    opts.derivatives = derivatives
    for name, path in derivatives.items():
        if opts.output_dir == path or path in opts.output_dir.parents or opts.output_dir in path.parents:
            parser.error(f"output_dir {opts.output_dir} overlaps the '{name}' derivatives {path} that ketflow "
                         f"reads; choose a folder of its own, e.g. {opts.bids_dir / 'derivatives' / 'ketflow'}")
    for what, attr in (("plugin arguments", "plugin_args"), ("BIDS filter file", "bids_filter_file")):
        path = getattr(opts, attr)
        if path is not None:
            try:
                setattr(opts, f"{attr}_dict", load_structured_file(path, what))
            except ValueError as err:
                parser.error(str(err))
        else:
            setattr(opts, f"{attr}_dict", {})
    for key, value in opts.bids_filter_file_dict.items():
        if not isinstance(value, dict):
            parser.error(f"{opts.bids_filter_file}: the filters of '{key}' must be a mapping of BIDS entities "
                         f"to values, e.g. {{\"{key}\": {{\"res\": \"2\"}}}}")
    try:
        json.dumps(opts.plugin_args_dict)
    except TypeError:
        parser.error(f"{opts.plugin_args}: plugin arguments must be plain JSON values")
    return opts


def output_dir_problem(output_dir: Path, bids_dir: Path) -> str | None:
    """Why ``output_dir`` cannot hold the outputs, or None.

    Outputs may go outside the input dataset or, as BIDS and fMRIPrep users put derivatives, in
    a folder of its own under ``bids_dir/derivatives/`` (e.g. ``derivatives/ketflow``), which
    input indexing skips; anywhere else inside the dataset they would be read as raw data.
    """
    if output_dir == bids_dir or output_dir in bids_dir.parents:
        return f"output_dir {output_dir} is the input dataset or contains it; choose a folder such as " \
               f"{bids_dir / 'derivatives' / 'ketflow'}"
    derivatives = bids_dir / "derivatives"
    if bids_dir in output_dir.parents and derivatives not in output_dir.parents:
        return (f"output_dir {output_dir} is inside the input dataset but not in a folder of its own under "
                f"{derivatives}; choose e.g. {derivatives / 'ketflow'}, or a folder outside {bids_dir}")
    return None


def label_problems(bids_dir: Path, participants: list[str] | None, sessions: list[str] | None) -> list[str]:
    """``--participant-label``/``--session-label`` values that name nothing in ``bids_dir``.

    Labels are accepted with or without their ``sub-``/``ses-`` prefix; a session label is
    known when any subject has that session folder.
    """
    found = {"sub": {p.name[4:] for p in bids_dir.glob("sub-*") if p.is_dir()},
             "ses": {p.name[4:] for p in bids_dir.glob("sub-*/ses-*") if p.is_dir()}}
    problems = []
    for option, prefix, labels in (("--participant-label", "sub", participants), ("--session-label", "ses", sessions)):
        bare = [label.removeprefix(f"{prefix}-") for label in labels or []]
        unknown = [f"{prefix}-{label}" for label in bare if label not in found[prefix]]
        if unknown:
            have = ", ".join(f"{prefix}-{label}" for label in sorted(found[prefix])) or "none"
            problems.append(f"{option}: {', '.join(unknown)} not found in {bids_dir} (it has {have})")
    return problems

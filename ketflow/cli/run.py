"""The ``ketflow`` entry point: parse, validate, build and run the workflow, report.

Exit status (as fMRIPrep): 0 success, also when quality control excluded runs or whole
subjects (exclusion is not failure: the summary and ``sub-XX_exclusions.tsv`` name them); 2 bad
arguments or configuration (unknown participant, session or task labels included); 1 invalid
inputs or any failed node/report (the summary names each crash file), or an unexpected error.  Errors are printed as
messages, never as a bare traceback; ``-v`` adds the traceback of an unexpected error.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import sys
from pathlib import Path
import time
import traceback

os.environ.setdefault("NIPYPE_NO_ET", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

from .. import __version__  # noqa: E402
from ..config import SLOPPY_GROUP, ConfigError, load_config, sloppy_config  # noqa: E402
from ..io.bids import InputError  # noqa: E402
from .parser import USED_FILTER_KEYS, config_overrides, parse_args  # noqa: E402

LOGGER = logging.getLogger("ketflow")


def _setup_logging(verbosity: int) -> None:
    """INFO by default, DEBUG with ``-v``; ``-vv`` also shows Nipype's own workflow log."""
    level = logging.WARNING - 10 * min(verbosity + 1, 2)
    logging.basicConfig(level=level, format="%(asctime)s [%(name)s] %(levelname)s: %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stdout)
    LOGGER.setLevel(level)
    # Nipype logs through its own loggers to the handler of the "nipype" logger: silent by
    # default (ketflow logs each node's progress itself), shown with -vv (once: not also
    # through the root logger).
    logging.getLogger("nipype").propagate = False
    for name in ("nipype.workflow", "nipype.interface", "nipype.utils", "nipype.filemanip"):
        nipype_logger = logging.getLogger(name)
        nipype_logger.propagate = verbosity > 1
        if verbosity <= 1:  # a handler that drops records, or Python prints them raw to stderr
            nipype_logger.addHandler(logging.NullHandler())


def _fail(message: str, status: int) -> int:
    print(f"ketflow: error: {message}", file=sys.stderr)
    return status


def _unexpected(err: BaseException, opts) -> int:
    """Last resort: a clear message naming where logs and crash files are; traceback with -v."""
    logs = opts.output_dir / "logs"
    where = (f"logs and crash files: {logs}" if logs.is_dir() else f"nothing was written to {opts.output_dir}")
    if opts.verbose:
        traceback.print_exception(err, file=sys.stderr)
    hint = "" if opts.verbose else "; rerun with -v to see the traceback"
    return _fail(f"unexpected {type(err).__name__}: {err}\n{where}; Nipype work directory: {opts.work_dir}{hint}", 1)


def _out_of_space(err: OSError) -> bool:
    """Disk full: ENOSPC, or the tempfile module finding no writable temporary directory."""
    return err.errno == errno.ENOSPC or "No usable temporary directory" in str(err)


def main(argv: list[str] | None = None) -> int:
    """Run ketflow; returns (and, as a console script, exits with) the status code."""
    opts = parse_args(argv)
    _setup_logging(opts.verbose)
    LOGGER.debug("ketflow %s options: %s", __version__, {k: str(v) for k, v in vars(opts).items()})
    if opts.omp_nthreads > opts.nprocs:
        LOGGER.warning("--omp-nthreads (%d) exceeds --nprocs (%d): per-process threads will oversubscribe "
                       "the processors", opts.omp_nthreads, opts.nprocs)
    unused = sorted(set(opts.bids_filter_file_dict) - set(USED_FILTER_KEYS))
    if unused:
        LOGGER.warning("%s: filters for %s are not used (ketflow selects %s files; the other inputs follow "
                       "their entities)", opts.bids_filter_file, unused, ", ".join(USED_FILTER_KEYS))
    try:
        config = load_config(opts.config, config_overrides(opts))
    except (ConfigError, ValueError) as err:
        return _fail(str(err), 2)
    if opts.sloppy:
        config = sloppy_config(config)
        LOGGER.warning("--sloppy: group resampling cut to %s (testing only: do not report these p-values and "
                       "selection frequencies)", SLOPPY_GROUP)
    unknown_tasks = sorted(set(opts.task or []) - set(config.tasks))
    if unknown_tasks:
        return _fail(f"--task {unknown_tasks}: not in the configuration's tasks {sorted(config.tasks)}", 2)

    start = time.monotonic()
    try:
        if opts.analysis_level == "participant":
            from ..workflows.participant import run_participant_level

            status = run_participant_level(opts, config)
        else:
            from ..workflows.group import run_group_level

            status = run_group_level(opts, config)
    except (ValueError, OSError) as err:  # InputError is a ValueError
        if isinstance(err, OSError) and _out_of_space(err):
            return _fail(f"no space left on the device ({err}): free space for the work directory "
                         f"{opts.work_dir}, the output directory {opts.output_dir} and the temporary directory "
                         f"(TMPDIR), then rerun the same command to resume from the work directory", 1)
        if not isinstance(err, (ValueError, FileNotFoundError)):
            return _unexpected(err, opts)
        detail = f"\n{err}" if isinstance(err, InputError) else f" {err}"
        return _fail(f"invalid inputs, nothing was processed:{detail}", 1)
    except KeyboardInterrupt:
        return _fail("interrupted; rerun the same command to resume from the work directory", 1)
    except Exception as err:  # noqa: BLE001 - the last resort: a message, not a bare traceback
        return _unexpected(err, opts)
    LOGGER.info("ketflow %s %s level finished in %.0f s with status %d", __version__, opts.analysis_level,
                time.monotonic() - start, status)
    if opts.clean_workdir and status == 0:
        for path in clean_work_dir(opts.work_dir):
            LOGGER.info("--clean-workdir: removed %s", path)
    return status


#: What ketflow writes into the work directory (Nipype workflows, group inputs).
WORK_FOLDERS = ("ketflow_wf", "ketflow_reports_wf", "ketflow_group_wf", "ketflow_group_inputs")


def clean_work_dir(work_dir: Path) -> list[Path]:
    """Remove ketflow's folders from ``work_dir``, and the folder itself if nothing else is left
    (it may be shared with other tools); returns what was removed."""
    removed = []
    for name in WORK_FOLDERS:
        path = Path(work_dir) / name
        if path.is_dir():
            shutil.rmtree(path)
            removed.append(path)
    if Path(work_dir).is_dir() and not any(Path(work_dir).iterdir()):
        Path(work_dir).rmdir()
        removed.append(Path(work_dir))
    return removed


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

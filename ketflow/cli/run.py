"""The ``ketflow`` entry point: parse, validate, build and run the workflow, report.

Exit status (as fMRIPrep): 0 success; 2 bad arguments or configuration; 1 invalid inputs or
any failed node/report (the message says where the crash files are). Errors are printed as
messages, never as a bare traceback.
"""

from __future__ import annotations

import logging
import os
import sys
import time

os.environ.setdefault("NIPYPE_NO_ET", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

from .. import __version__  # noqa: E402
from ..config import ConfigError, load_config  # noqa: E402
from ..io.bids import InputError  # noqa: E402
from .parser import parse_args  # noqa: E402

LOGGER = logging.getLogger("ketflow")


def _setup_logging(verbosity: int) -> None:
    level = logging.WARNING - 10 * min(verbosity + 1, 2)  # default INFO, -v DEBUG
    logging.basicConfig(level=level, format="%(asctime)s [%(name)s] %(levelname)s: %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stdout)
    # Nipype logs through its own handlers: keep them from repeating every line via the root logger.
    for name, quiet in (("nipype.workflow", logging.INFO), ("nipype.interface", logging.WARNING),
                        ("nipype.utils", logging.WARNING)):
        nipype_logger = logging.getLogger(name)
        nipype_logger.propagate = False
        nipype_logger.setLevel(logging.DEBUG if verbosity > 1 else quiet)


def _fail(message: str, status: int) -> int:
    print(f"ketflow: error: {message}", file=sys.stderr)
    return status


def main(argv: list[str] | None = None) -> int:
    """Run ketflow; returns (and, as a console script, exits with) the status code."""
    opts = parse_args(argv)
    _setup_logging(opts.verbose)
    if opts.omp_nthreads > opts.nprocs:
        LOGGER.warning("--omp-nthreads (%d) exceeds --nprocs (%d): per-process threads will oversubscribe "
                       "the processors", opts.omp_nthreads, opts.nprocs)
    try:
        config = load_config(opts.config)
    except ConfigError as err:
        return _fail(str(err), 2)
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
    except (InputError, ValueError, FileNotFoundError) as err:
        detail = f"\n{err}" if isinstance(err, InputError) else f" {err}"
        return _fail(f"invalid inputs, nothing was processed:{detail}", 1)
    except KeyboardInterrupt:
        return _fail("interrupted; rerun the same command to resume from the work directory", 1)
    LOGGER.info("ketflow %s %s level finished in %.0f s with status %d", __version__, opts.analysis_level,
                time.monotonic() - start, status)
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

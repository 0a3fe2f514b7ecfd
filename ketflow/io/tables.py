"""Reading the TSV tables ketflow's nodes exchange and BIDS events, with one convention each.

* :func:`read_events`: a BIDS ``events.tsv``; only ``n/a`` is missing (a trial type called
  ``NA`` or ``null`` stays a trial type); errors name the file.  Every node that reads events
  (screening, task designs, DCM inputs, task-residual connectivity) reads them with it, so
  they all see the table the screening validated.
* :func:`read_numeric_tsv`: a table of numbers written by ketflow or fMRIPrep (confound
  regressors, ROI time series), ``n/a`` missing.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd


def read_events(path: str | os.PathLike) -> pd.DataFrame:
    """Read a BIDS events TSV; a ValueError names the file if it cannot be parsed."""
    try:
        return pd.read_csv(path, sep="\t", na_values=["n/a"], keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: cannot read the events TSV ({err})") from err


def read_numeric_tsv(path: str | os.PathLike, n_rows: int | None = None) -> pd.DataFrame:
    """A TSV of numbers (``n/a`` missing); with ``n_rows``, a ValueError names the file when
    its number of rows differs."""
    table = pd.read_csv(path, sep="\t", na_values=["n/a"])
    if n_rows is not None and len(table) != n_rows:
        raise ValueError(f"{Path(path).name}: {len(table)} rows for {n_rows} volumes")
    return table

"""Specification of a DCM for fMRI and SPM12's data preprocessing.

Preprocessing before inversion (SPM12 ``spm_dcm_estimate``): each region's
time series is mean-centred, then all are multiplied by
``scale = 4 / max(4, max(Y) - min(Y))`` (so the range never exceeds 4 %);
inputs are mean-centred only when ``options.centre`` is true; a constant
confound is used when none is given.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["DCMOptions", "DCMSpec", "build_spec", "preprocess_data"]


@dataclass
class DCMOptions:
    """Inversion options (SPM12 defaults).

    centre : mean-centre the inputs before inversion.
    hE, hC : prior mean and variance of each region's log noise precision.
    maxit : maximum number of variational Laplace iterations.
    maxnodes : above this many regions the prior covariance of A is restricted
        to the data's ``maxnodes`` principal modes (SPM12).
    use_acquisition_te : use ``DCMSpec.TE`` in the BOLD equation instead of
        SPM12's fixed 0.04 s.
    m_step : update of the noise log-precisions in each variational Laplace
        iteration: "fisher" (SPM12's scheme, the default) or "newton" (to
        convergence; robust when the noise is far above its prior expectation),
        see :func:`ketflow.dcm.vl.variational_laplace`.
    noise : "iid" (SPM12: white noise per region) or "ar1": serially correlated noise,
        estimated in two passes (see :func:`ketflow.dcm.fit.fit_dcm`).
    """

    centre: bool = False
    hE: float = 6.0
    hC: float = 1.0 / 128
    maxit: int = 128
    maxnodes: int = 8
    use_acquisition_te: bool = False
    m_step: str = "fisher"
    noise: str = "iid"


def preprocess_data(Y):
    """Centre and rescale BOLD as SPM12 does before inversion.

    Y : array (n_scans, n_regions). Returns (Y_processed, scale).
    """
    Y = np.asarray(Y, dtype=float)
    Yc = Y - Y.mean(axis=0)
    scale = 4.0 / max(float(Yc.max() - Yc.min()), 4.0)
    return Yc * scale, scale


@dataclass
class DCMSpec:
    """One subject's DCM.

    Attributes
    ----------
    Y : array (n_scans, n_regions)
        Regional BOLD (e.g. first eigenvariates), in any units.
    U : array (n_rows, n_inputs)
        Inputs on the micro-time grid; row r is at ``r·U_dt`` s after the first
        scan's acquisition reference.
    U_dt : float
        Micro-time step (s), normally ``TR/16``.
    TR : float
        Repetition time (s).
    a : array (n, n)
        Endogenous connection mask [to, from].
    b : array (m, n, n)
        Modulatory mask [input, to, from].
    c : array (n, m)
        Driving-input mask [to, input].
    d : array (n_d, n, n) or None
        Nonlinear mask [modulating region, to, from].
    TE : float
        Echo time of the acquisition (s); see ``DCMOptions.use_acquisition_te``.
    delays : array (n,) or None
        Sampling delay per region (s); default ``TR/2``.
    X0 : array (n_scans, k) or None
        Confounds; default a constant.
    region_names, input_names : list of str
    options : DCMOptions
    """

    Y: np.ndarray
    U: np.ndarray
    U_dt: float
    TR: float
    a: np.ndarray
    b: np.ndarray
    c: np.ndarray
    d: np.ndarray | None = None
    TE: float = 0.04
    delays: np.ndarray | None = None
    X0: np.ndarray | None = None
    region_names: list[str] = field(default_factory=list)
    input_names: list[str] = field(default_factory=list)
    options: DCMOptions = field(default_factory=DCMOptions)

    def __post_init__(self):
        self.Y = np.atleast_2d(np.asarray(self.Y, dtype=float))
        n_scans, n = self.Y.shape
        self.U = np.asarray(self.U, dtype=float)
        if self.U.ndim == 1:
            self.U = self.U[:, None]
        m = self.U.shape[1]
        self.a = np.asarray(self.a, dtype=float).reshape(n, n)
        self.b = np.zeros((m, n, n)) if self.b is None else np.asarray(self.b, dtype=float).reshape(m, n, n)
        self.c = np.asarray(self.c, dtype=float).reshape(n, m)
        if self.d is not None and np.size(self.d) == 0:
            self.d = None
        if self.d is not None:
            self.d = np.asarray(self.d, dtype=float).reshape(-1, n, n)
        self.delays = (
            np.full(n, self.TR / 2.0)
            if self.delays is None
            else np.broadcast_to(np.asarray(self.delays, dtype=float), (n,)).copy()
        )
        if self.X0 is None or np.size(self.X0) == 0:
            self.X0 = np.ones((n_scans, 1))
        self.X0 = np.asarray(self.X0, dtype=float).reshape(n_scans, -1)
        if not self.region_names:
            self.region_names = [f"region{i + 1}" for i in range(n)]
        if not self.input_names:
            self.input_names = [f"input{k + 1}" for k in range(m)]
        if len(self.region_names) != n or len(self.input_names) != m:
            raise ValueError("region_names / input_names do not match Y / U")
        if isinstance(self.options, dict):
            unknown = sorted(set(self.options) - {f.name for f in fields(DCMOptions)})
            if unknown:
                raise ValueError(f"unknown DCM options {unknown}; known: {[f.name for f in fields(DCMOptions)]}")
            self.options = DCMOptions(**self.options)
        if not np.any(self.c) or not np.any(self.U):
            raise ValueError(
                "the model has no driving input (c or U is all zero); deterministic DCM needs at least one "
                "(SPM would switch to stochastic DCM, which ketflow does not implement)"
            )

    @property
    def n_regions(self) -> int:
        return self.Y.shape[1]

    @property
    def n_inputs(self) -> int:
        return self.U.shape[1]

    @property
    def n_scans(self) -> int:
        return self.Y.shape[0]

    def processed_inputs(self) -> np.ndarray:
        """Inputs as used in the model (mean-centred if ``options.centre``)."""
        return self.U - self.U.mean(axis=0) if self.options.centre else self.U

    @classmethod
    def from_spm_reference(cls, case_dir) -> DCMSpec:
        """Read a case folder of ``tests/data/spm/spm_dcm`` (spec.json, Y, U, X0 CSVs)."""
        import pandas as pd

        case_dir = Path(case_dir)
        spec = json.loads((case_dir / "spec.json").read_text())
        Y = pd.read_csv(case_dir / "Y.csv")
        U = pd.read_csv(case_dir / "U.csv")
        X0 = pd.read_csv(case_dir / "X0.csv").to_numpy() if (case_dir / "X0.csv").exists() else None
        opts = spec.get("options", {})
        return cls(
            Y=Y.to_numpy(),
            U=U.to_numpy(),
            U_dt=float(spec["U_dt"]),
            TR=float(spec["TR"]),
            TE=float(spec.get("TE", 0.04)),
            a=np.asarray(spec["a"], dtype=float),
            b=np.asarray(spec["b"], dtype=float),
            c=np.asarray(spec["c"], dtype=float),
            d=np.asarray(spec["d"], dtype=float) if spec.get("d") else None,
            delays=np.asarray(spec["delays_s"], dtype=float),
            X0=X0,
            region_names=list(spec["region_names"]),
            input_names=list(spec["input_names"]),
            options=DCMOptions(
                centre=bool(opts.get("centre", 0)),
                hE=float(opts.get("hE", 6.0)),
                hC=float(opts.get("hC", 1.0 / 128)),
                maxit=int(opts.get("maxit", 128)),
                maxnodes=int(opts.get("maxnodes", 8)),
            ),
        )


def build_spec(timeseries: pd.DataFrame, events: pd.DataFrame, TR: float, start_time: float, model: dict,
               confounds: pd.DataFrame | None = None) -> DCMSpec:
    """A :class:`DCMSpec` from a run's regional series, its events and a model layout.

    timeseries : (n_scans, regions) table, one column per region; events : BIDS events;
    model : ``regions``, ``inputs`` (name -> trial types, or a list of trial types, one input
    each), masks ``a`` [to][from], ``b`` [input][to][from], ``c`` [to][input], optional ``d``
    [region][to][from], ``delays`` (s) and ``options`` (:class:`DCMOptions` fields), as
    ``ketflow.config.DCM.model_layout`` gives them; confounds : X0 without the constant.
    Inputs are built on the TR/16 micro-time grid (:func:`ketflow.dcm.inputs.inputs_from_events`).
    """
    from ketflow.signal.denoise import design_basis

    from .inputs import inputs_from_events
    from .voi import confound_matrix

    regions = list(model["regions"])
    missing = sorted(set(regions) - set(timeseries.columns))
    if missing:
        raise ValueError(f"regions {missing} are not columns of the time-series table")
    inputs = model["inputs"]
    if not isinstance(inputs, dict):
        inputs = {name: [name] for name in inputs}
    Y = timeseries[regions].to_numpy(dtype=float)
    if not np.all(np.isfinite(Y)):
        raise ValueError("ROI time series contain missing values; DCM needs every scan")
    n_scans = Y.shape[0]
    U, dt = inputs_from_events(events, inputs, TR, n_scans, start_time=start_time)
    X0 = np.ones((n_scans, 1))
    if confounds is not None:
        # An orthonormal basis of [constant, confounds]: the same observation model (the confound
        # coefficients have flat priors), but badly scaled columns (raw tissue means ~1000, squared
        # motion ~1e-6) no longer distort the Gauss-Newton step sizes of the inversion.
        X0 = design_basis(np.column_stack([X0, confound_matrix(confounds, n_scans).to_numpy()]))
    n = len(regions)
    return DCMSpec(
        Y=Y,
        U=U,
        U_dt=dt,
        TR=TR,
        a=np.asarray(model["a"], dtype=float),
        b=np.asarray(model.get("b", np.zeros((len(inputs), n, n))), dtype=float),
        c=np.asarray(model["c"], dtype=float),
        d=np.asarray(model["d"], dtype=float) if model.get("d") else None,
        delays=np.asarray(model.get("delays", np.zeros(n)), dtype=float),
        X0=X0,
        region_names=regions,
        input_names=list(inputs),
        options=model.get("options", {}),
    )

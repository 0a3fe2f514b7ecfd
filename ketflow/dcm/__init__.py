"""Dynamic causal modelling for fMRI (deterministic one-state DCM, SPM12 conventions)."""

from .bmr import bayesian_model_reduction
from .fit import DCMResult, fit_dcm
from .simulate import simulate_bold
from .spec import DCMOptions, DCMSpec

__all__ = [
    "DCMOptions",
    "DCMResult",
    "DCMSpec",
    "bayesian_model_reduction",
    "fit_dcm",
    "simulate_bold",
]

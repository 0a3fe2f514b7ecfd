"""Dynamic causal modelling for fMRI (deterministic one-state DCM, SPM12 conventions)."""

from .bmr import bayesian_model_reduction
from .simulate import simulate_bold

__all__ = ["bayesian_model_reduction", "simulate_bold"]

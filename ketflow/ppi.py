"""Deconvolved PPI (SPM ``spm_peb_ppi``): moved to :mod:`ketflow.signal.ppi`.

Kept so that ``from ketflow.ppi import peb_ppi`` (used by other tools) keeps working.
"""

from .signal.ppi import PPIResult, peb_deconvolve, peb_ppi

__all__ = ["PPIResult", "peb_ppi", "peb_deconvolve"]

"""ketflow: a fear/emotion-regulation circuit BIDS App that runs after fMRIPrep."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ketflow")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = ["__version__"]

"""Ground-truth simulator: a raw BIDS dataset with fMRIPrep-style derivatives and known truth."""

from ketflow.simulate.dataset import simulate_dataset

__all__ = ["simulate_dataset"]

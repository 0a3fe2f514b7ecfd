"""ketflow.io."""

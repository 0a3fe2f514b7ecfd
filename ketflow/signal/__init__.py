"""ketflow.signal."""

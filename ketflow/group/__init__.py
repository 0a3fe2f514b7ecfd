"""ketflow.group."""

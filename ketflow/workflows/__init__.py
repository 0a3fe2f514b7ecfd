"""ketflow.workflows."""

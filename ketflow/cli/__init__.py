"""ketflow.cli."""

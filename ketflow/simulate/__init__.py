"""ketflow.simulate."""

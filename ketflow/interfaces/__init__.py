"""ketflow.interfaces."""

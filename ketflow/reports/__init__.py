"""ketflow.reports."""

"""ketflow.dcm."""

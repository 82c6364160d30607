"""MLflow: run setup, identity and resume, artifacts."""

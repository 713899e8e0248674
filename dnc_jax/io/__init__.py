"""Files: atomic writes, JSON, checkpoints and run directories."""

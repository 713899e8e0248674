"""Figures (matplotlib, imported on first use)."""

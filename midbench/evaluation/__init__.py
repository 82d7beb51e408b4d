"""Evaluation: protocols, the per-example robustness matrix, metrics and result files."""

"""Reference sets (data, no code): shipped inside the wheel as ``midbench.reference_sets`` (docs/scoring.md)."""

"""Attacks behind one contract (:class:`midbench.attacks.base.Attack`) and the TOML attack registry."""

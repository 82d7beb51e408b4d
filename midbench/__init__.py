"""midbench: benchmark defenses against known and unknown adversarial attacks.

Importing this package must stay cheap (no torch): the CLI's ``--help`` depends on it.
"""

__version__ = "0.1.0"

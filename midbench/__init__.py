"""midbench: benchmark defenses against known and unknown adversarial attacks.

The Python API (docs/api.md): :func:`evaluate`, :func:`leaderboard`, :func:`load_model`, :func:`load_result`,
:func:`train` and :class:`EvaluationResult`, from :mod:`midbench.api`. Importing this package must stay cheap (no
torch): the CLI's ``--help`` depends on it, and the API imports torch only when called.
"""

from midbench._version import __version__
from midbench.api import EvaluationResult, evaluate, leaderboard, load_model, load_result, train

__all__ = ["EvaluationResult", "__version__", "evaluate", "leaderboard", "load_model", "load_result", "train"]

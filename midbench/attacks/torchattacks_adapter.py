"""Adapter for attacks of the optional torchattacks backend (Kim, "Torchattacks: A PyTorch Repository for
Adversarial Attacks", arXiv:2010.01950), for attacks midbench does not implement natively.

Registry entries name them ``torchattacks:<Class>``; install with ``pip install 'midbench[torchattacks]'``.
Without the extra, building such an attack fails with a one-line install hint; loading the registry does not.
The adapter hands torchattacks the model (already in eval mode with frozen parameters, per the attack
contract), passes ε where the class takes one, and sets the targeted mode from midbench's target policy.
"""

from __future__ import annotations

import inspect
import random
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from midbench.attacks.base import Attack
from midbench.attacks.norms import Norm
from midbench.errors import UsageError

INSTALL_HINT = "pip install 'midbench[torchattacks]'"


def _torchattacks_class(name: str) -> type:
    try:
        import torchattacks
    except ImportError as error:
        raise UsageError(f"torchattacks:{name} needs the optional torchattacks backend: {INSTALL_HINT}") from error
    attack_class = getattr(torchattacks, name, None)
    if not inspect.isclass(attack_class):
        raise UsageError(f"torchattacks has no attack {name!r}; check the registry entry")
    return attack_class


class TorchattacksAttack(Attack):
    """Runs ``torchattacks.<name>(model, **params)`` behind midbench's attack contract.

    Args:
        name: the torchattacks class name (``JSMA``, ``EADL1``, ``OnePixel``, ``SPSA``, ``Pixle``, ``Jitter``...).
        params: keyword arguments of that class (besides the model; ``eps`` comes from the entry's ε).
    """

    def __init__(self, eps: float, norm: Norm | None, name: str, target: str | None = None,
                 **params: Any) -> None:
        super().__init__(eps, norm, target)
        self.name = name
        self.attack_class = _torchattacks_class(name)
        self.params = params

    #: the torchattacks classes that only query the model (zeroth-order or evolutionary searches)
    QUERY_ONLY: ClassVar[frozenset[str]] = frozenset({"SPSA", "OnePixel", "Pixle"})

    @classmethod
    def gradient_based(cls, preset: dict[str, Any]) -> bool:
        return preset.get("name") not in cls.QUERY_ONLY

    @classmethod
    def accepted_parameters(cls, name: str) -> set[str] | None:
        """The class's keyword arguments, or ``None`` when torchattacks is not installed."""
        try:
            attack_class = _torchattacks_class(name)
        except UsageError:
            return None
        return set(inspect.signature(attack_class.__init__).parameters) - {"self", "model", "eps"}

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        kwargs = dict(self.params)
        if "eps" in inspect.signature(self.attack_class.__init__).parameters:
            kwargs["eps"] = self.eps
        attack = self.attack_class(model, **kwargs)
        if self.targeted:
            targets = self.choose_targets(model, x, y)
            # quiet: torchattacks otherwise prints "Attack mode is changed..." into the user's output every batch
            attack.set_mode_targeted_by_function(lambda images, labels: targets, quiet=True)
        # Some torchattacks attacks (OnePixel, Pixle) draw from numpy's and Python's global RNGs; seed both from
        # torch's (which midbench seeds per batch) so every attack is reproducible, and restore them after.
        seed = int(torch.randint(0, 2**31 - 1, (1,)).item())
        numpy_state, python_state = np.random.get_state(), random.getstate()
        np.random.seed(seed)
        random.seed(seed)
        try:
            return attack(x, y)
        finally:
            np.random.set_state(numpy_state)
            random.setstate(python_state)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "backend": f"torchattacks:{self.name}", **self.params}

"""AutoAttack through the reference code (Croce & Hein, "Reliable evaluation of adversarial robustness with
an ensemble of diverse parameter-free attacks", ICML 2020), packaged on PyPI as ``pyautoattack``.

midbench runs the standard sequence itself — APGD-CE, APGD-T, FAB-T, Square, each only on the points still
robust — with the package's own attack objects, configured by the package's own ``standard`` version. That way
it can report the accuracy after each component and show progress, while the final per-example robust mask is
exactly that of ``AutoAttack.run_standard_evaluation`` on the same model, data, batch size and seed: the
still-robust points are visited in the same order and in batches of the same size, and each component
reseeds torch's RNG from the seed before each batch just as the reference does.

The reference reseeds torch's *global* RNG; midbench saves and restores it around the attack.

Under ``torchrun`` (:attr:`AutoAttackStandard.shard`) each component's batches are dealt across the processes
and the robust mask is merged after every component. Because each batch is reseeded from the seed and sees the
same points as in a single process, every component attacks every point exactly as the single process does: the
robust mask is identical. The adversarial images a rank returns are its own batches' (the others are left
clean); the engine merges the masks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import nn

from midbench.attacks.base import Attack
from midbench.attacks.norms import Norm
from midbench.errors import UsageError

STANDARD_COMPONENTS = ("apgd-ce", "apgd-t", "fab-t", "square")

#: Called after each component with (component, robust count, total count).
ProgressFn = Callable[[str, int, int], None]


class AutoAttackStandard(Attack):
    """AutoAttack "standard" (APGD-CE, APGD-T, FAB-T, Square) at ε in L∞ or L2.

    Args:
        seed: seed handed to every component (the reference's ``seed``); never ``None`` in midbench.
        batch_size: examples per batch, as ``run_standard_evaluation(batch_size=...)``.
        components: a prefix or subset of the standard sequence, in order (default: all four).
    """

    handles_batching: ClassVar[bool] = True

    @classmethod
    def gradient_based(cls, preset: dict[str, Any]) -> bool:
        """APGD-CE, APGD-T and FAB-T follow gradients; Square only queries, and the standard ensemble contains
        Square, so it is not compared with the gradient attacks as one of them."""
        return "square" not in preset.get("components", STANDARD_COMPONENTS)

    def __init__(self, eps: float, norm: Norm, seed: int = 0, batch_size: int = 250,
                 components: tuple[str, ...] = STANDARD_COMPONENTS) -> None:
        super().__init__(eps, norm)
        if norm not in (Norm.LINF, Norm.L2):
            raise UsageError("AutoAttack standard is defined for Linf and L2; use an L1 entry for L1")
        unknown = [c for c in components if c not in STANDARD_COMPONENTS]
        if unknown:
            raise UsageError(f"unknown AutoAttack component(s) {unknown}; use {', '.join(STANDARD_COMPONENTS)}")
        self.seed = int(seed)
        self.batch_size = int(batch_size)
        self.components = tuple(components)
        self.progress: ProgressFn | None = None
        #: robust accuracy (over the examples passed in) after each component of the last call
        self.component_accuracy: dict[str, float] = {}

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        from pyautoattack import AutoAttack

        device = x.device
        devices = [device] if device.type == "cuda" else []
        # The reference's "auto-attack" logger is silent unless configured; keep it so.
        logging.getLogger("auto-attack").addHandler(logging.NullHandler())
        with torch.random.fork_rng(devices=devices):
            reference = AutoAttack(model, norm=self.norm.value, eps=self.eps, version="standard",
                                   device=device, seed=self.seed)
            runners = {
                "apgd-ce": lambda xb, yb: _apgd(reference, xb, yb),
                "apgd-t": lambda xb, yb: _seeded(reference.apgd_targeted, reference).perturb(xb, yb),
                "fab-t": lambda xb, yb: _fab_targeted(reference, xb, yb),
                "square": lambda xb, yb: _seeded(reference.square, reference).perturb(xb, yb),
            }
            robust = torch.ones(x.shape[0], dtype=torch.bool, device=device)
            with torch.no_grad():
                for number, start in enumerate(range(0, x.shape[0], self.batch_size)):
                    if self.shard.owns(number):
                        robust[start:start + self.batch_size] = \
                            model(x[start:start + self.batch_size]).argmax(1) == y[start:start + self.batch_size]
            robust = self.shard.all_and(robust)
            x_adv = x.clone()
            self.component_accuracy = {}
            total = max(int(x.shape[0]), 1)
            # The reference runs its loop under no_grad (each component enables gradients itself); so do we.
            for component in self.components:
                robust_index = torch.nonzero(robust).flatten()
                for number, start in enumerate(range(0, int(robust_index.numel()), self.batch_size)):
                    if not self.shard.owns(number):
                        continue
                    index = robust_index[start:start + self.batch_size]
                    x_batch, y_batch = x[index].clone(), y[index].clone()
                    with torch.no_grad():
                        adversarial = runners[component](x_batch, y_batch)
                    with torch.no_grad():
                        fooled = model(adversarial).argmax(1) != y_batch
                    robust[index[fooled]] = False
                    x_adv[index[fooled]] = adversarial[fooled].detach()
                robust = self.shard.all_and(robust)  # the next component attacks what every rank left robust
                robust_count = int(robust.sum())
                self.component_accuracy[component] = robust_count / total
                if self.progress is not None:
                    self.progress(component, robust_count, int(x.shape[0]))
        return x_adv

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "version": "standard", "components": list(self.components),
                "seed": self.seed, "batch_size": self.batch_size}


def _seeded(attack: Any, reference: Any) -> Any:
    attack.seed = reference.get_seed()
    return attack


def _apgd(reference: Any, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    reference.apgd.loss = "ce"
    reference.apgd.seed = reference.get_seed()
    return reference.apgd.perturb(x, y)


def _fab_targeted(reference: Any, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    reference.fab.targeted = True
    reference.fab.n_restarts = 1
    reference.fab.seed = reference.get_seed()
    return reference.fab.perturb(x, y)

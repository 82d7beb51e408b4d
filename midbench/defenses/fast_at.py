"""Fast adversarial training (Wong, Rice & Kolter, "Fast is better than free: Revisiting adversarial training",
ICLR 2020).

Each step trains on FGSM examples from a random start: ``δ ~ U(−ε, ε)`` (clipped so x + δ ∈ [0, 1]), one step
``δ ← δ + α·sign(∇_δ CE)`` with α = 1.25ε, then δ clipped to the ε-ball and x + δ to [0, 1]. That is PGD with one
step of α from a uniform random start, so the training attack is recorded as ``midbench.attacks.gradient:PGD``
with ``steps = 1``, ``step_size = α``, ``random_start = true`` under the id ``fgsm-rs-<family>`` (version 0):
evaluation can rebuild it, and by specification it is neither ``fgsm-linf`` (no random start, step ε) nor
``pgd-linf``.

Cost per training step and example: exactly 2 forwards and 2 backwards (one of each for the attack, one for the
update).

The paper pairs the method with a cyclic learning rate (``--schedule cyclic``: linear up to ``--lr`` at the
middle of training, then down to 0) and guards against *catastrophic overfitting* — PGD accuracy collapsing
within an epoch while FGSM accuracy keeps rising — by early stopping on held-out PGD accuracy. Here
:meth:`FastAdversarialTraining.should_stop` stops training when the held-out PGD accuracy of an epoch (the loop's
``val_pgd{steps}_acc``) falls more than ``--overfit-drop`` (default 0.2, absolute) below the best so far; the
loop then keeps the best epoch's model.

At large ε that stop may come too early to leave a useful model: FGSM-RS still overfits catastrophically there
(Andriushchenko & Flammarion, NeurIPS 2020; MNIST at ε = 0.3 is such a case). ``--fast-at-noise K`` switches the
attack to N-FGSM (de Jorge et al., "Make Some Noise", NeurIPS 2022; :class:`midbench.attacks.gradient.NoisyFGSM`):
uniform noise of K·ε per pixel (the paper's K is 2), one signed step of α (default ε, the paper's), and no
projection back onto the ε-ball, at the same cost. Its perturbation reaches (K + 1)·ε, which the recorded attack
``n-fgsm-<family>`` (version 0) states as its ε.

Differences from the reference set-up: the attack runs with the model in eval mode (midbench's attack contract),
and mixed precision is opt-in (``--bf16``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from midbench.attacks.norms import Norm
from midbench.attacks.specs import ResolvedAttack
from midbench.attacks.training import resolve_training_attack
from midbench.config import TrainConfig
from midbench.data.datasets import DatasetSpec
from midbench.defenses.base import METHODS
from midbench.defenses.options import check_positive, option
from midbench.defenses.pgd_at import PGDAdversarialTraining
from midbench.errors import UsageError

#: α = 1.25ε, the paper's step (10/255 at ε = 8/255)
STEP_FACTOR = 1.25


@dataclass(frozen=True)
class FastAtOptions:
    """fast-at's options: the FGSM step and the catastrophic-overfitting stop."""

    fast_at_step: float | None = option(None, "fast-at: FGSM step size α, absolute (default 1.25ε).")
    overfit_drop: float = option(0.2, "fast-at: stop when held-out PGD accuracy falls this much below its best, "
                                      "keeping the best epoch.")
    fast_at_noise: float | None = option(None, "fast-at: train with N-FGSM instead of FGSM-RS: uniform noise of "
                                               "this many ε per pixel (2 in de Jorge et al. 2022), step ε, no "
                                               "projection onto the ε-ball (L∞ only).")

    def __post_init__(self) -> None:
        check_positive(self, "fast_at_step")
        check_positive(self, "fast_at_noise")
        if not (math.isfinite(self.overfit_drop) and 0 < self.overfit_drop <= 1):
            raise UsageError(f"--overfit-drop is an accuracy drop in (0, 1], got {self.overfit_drop}")


def resolve_fgsm_rs(config: TrainConfig, dataset: DatasetSpec, step_size: float | None = None, scale: float = 1.0
                    ) -> ResolvedAttack:
    """FGSM with a random start as a resolved attack: the ε and norm of the training attack, one step of α
    (``step_size``; default 1.25ε), both at ``scale`` of their size (an ε warm-up)."""
    if config.attack_steps is not None or config.attack_step_size is not None:
        raise UsageError("fast-at takes exactly one FGSM step: drop --attack-steps/--attack-step-size "
                         "(set its step size with --fast-at-step)")
    base = resolve_training_attack(config, dataset, scale=scale)
    if base.norm not in (Norm.LINF, Norm.L2):
        raise UsageError(f"fast-at needs an L∞ or L2 ball; --train-attack {base.id} has norm {base.norm}")
    step = float(step_size) * scale if step_size is not None else STEP_FACTOR * base.eps
    return ResolvedAttack(id=f"fgsm-rs-{base.family}", version=0, family=base.family, norm=base.norm,
                          implementation="midbench.attacks.gradient:PGD", eps=base.eps, target=None,
                          params={"steps": 1, "step_size": step, "random_start": True})


def catastrophic_overfitting(log: list[dict[str, Any]], key: str, max_drop: float) -> str | None:
    """The stop reason when the last epoch's ``key`` lies more than ``max_drop`` below the best of ``log``."""
    values = [float(record[key]) for record in log if key in record]
    if not values or key not in log[-1]:
        return None
    best, current = max(values), float(log[-1][key])
    if best - current > max_drop + 1e-12:  # the tolerance keeps a drop of exactly max_drop from stopping
        best_epoch = next(record.get("epoch") for record in log if key in record and float(record[key]) == best)
        return (f"catastrophic overfitting: held-out {key} fell to {current:.4f} from its best {best:.4f} "
                f"(epoch {best_epoch}), a drop of more than {max_drop:g}")
    return None


def resolve_n_fgsm(config: TrainConfig, dataset: DatasetSpec, noise: float, step_size: float | None = None,
                   scale: float = 1.0) -> ResolvedAttack:
    """N-FGSM as a resolved attack: noise of ``noise`` ε, one step of α (default ε), its ε the largest move
    (noise + α), so the attack contract's projection leaves it unprojected, as the paper has it; ``scale``
    shrinks ε, the noise and α together (an ε warm-up)."""
    base = resolve_fgsm_rs(config, dataset, step_size, scale)
    if base.norm is not Norm.LINF:
        raise UsageError(f"--fast-at-noise (N-FGSM) is defined for L∞ only; --train-attack has norm {base.norm}")
    step = float(step_size) * scale if step_size is not None else base.eps
    return ResolvedAttack(id=f"n-fgsm-{base.family}", version=0, family=base.family, norm=base.norm,
                          implementation="midbench.attacks.gradient:NoisyFGSM", eps=noise * base.eps + step,
                          target=None, params={"noise": noise * base.eps, "step_size": step})


@METHODS.register("fast-at")
class FastAdversarialTraining(PGDAdversarialTraining):
    """Fast-AT: PGD-AT's loss on FGSM from a uniform random start, α = 1.25ε, with a catastrophic-overfitting
    stop (Wong, Rice & Kolter, ICLR 2020)."""

    name = "fast-at"
    citation = "Wong, Rice & Kolter, Fast is better than free: Revisiting adversarial training, ICLR 2020"
    Options = FastAtOptions

    def resolve_attack(self, config: TrainConfig, dataset: DatasetSpec, scale: float = 1.0) -> ResolvedAttack:
        if self.options.fast_at_noise is not None:
            return resolve_n_fgsm(config, dataset, self.options.fast_at_noise, self.options.fast_at_step, scale)
        return resolve_fgsm_rs(config, dataset, self.options.fast_at_step, scale)

    def should_stop(self, log: list[dict[str, Any]]) -> str | None:
        return catastrophic_overfitting(log, f"val_pgd{self.config.val_pgd_steps}_acc", self.options.overfit_drop)

    def describe(self) -> dict[str, Any]:
        return {"step_size": self.attack_spec.params["step_size"], "overfit_drop": self.options.overfit_drop,
                "train_attack": self.attack_spec.to_dict()}

    def training_steps(self) -> str:
        return "1 (N-FGSM)" if self.options.fast_at_noise is not None else "1 (FGSM-RS)"

"""DeepFool: Moosavi-Dezfooli, Fawzi & Frossard, "DeepFool: a simple and accurate method to fool deep neural
networks", CVPR 2016.

A minimal-norm attack: at each iterate the classifier is linearised, and the step is the smallest one that
crosses the nearest linearised decision boundary. Batched over examples; examples stop moving as soon as they
are misclassified.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from midbench.attacks.base import Attack, require_at_least
from midbench.attacks.norms import Norm, distance
from midbench.errors import UsageError

# Guards divisions by gradient-difference norms that vanish (flat logits).
_TINY = 1e-12


class DeepFool(Attack):
    """DeepFool (Moosavi-Dezfooli et al. 2016, Algorithm 2 and Section 3.3 for general ℓ_p), untargeted.

    With k̂ the true label (the model's prediction on every example still being attacked) and candidate classes
    k, at the iterate x_i let f'_k = Z_k(x_i) − Z_k̂(x_i) and w'_k = ∇Z_k(x_i) − ∇Z_k̂(x_i). For the ℓ_p threat
    model, with q the dual exponent (1/p + 1/q = 1):

        l̂ = argmin_k |f'_k| / ‖w'_k‖_q,    r_i = |f'_l̂| / ‖w'_l̂‖_q^q · |w'_l̂|^{q−1} ⊙ sign(w'_l̂)

    which is r_i = |f'_l̂| / ‖w'_l̂‖₂² · w'_l̂ for p = 2 (q = 2) and r_i = |f'_l̂| / ‖w'_l̂‖₁ · sign(w'_l̂) for
    p = ∞ (q = 1). As in the paper, the iterates are x_i = x + r̂ with r̂ = Σ r_i, and the answer is
    x + (1 + η) r̂ with the overshoot η. Two details keep this working inside the image box [0, 1], which the
    paper does not constrain:

    - gradient components pointing out of the box at coordinates already on its edge are zeroed before the
      ratios and steps are computed (the step is the one to the boundary within the face of the box the iterate
      lies on; MNIST's many exact-zero pixels otherwise absorb most of every step and the iterates stall), and
      r̂ keeps only what the clip to [0, 1] lets through;
    - an example stops as soon as its iterate or its overshot answer is misclassified. Checking the answer too
      (one extra forward pass without gradients) matters because on a curved boundary the iterates approach it
      without crossing, while (1 + η) r̂ crosses it by η‖r̂‖.

    Candidate classes are the ``candidates`` − 1 classes other than the label with the largest logits at the
    clean input (the paper's implementation restricts the search to the top classes the same way); the
    gradient differences w'_k come from one ``autograd.grad`` per candidate on the batch-summed logit
    difference, so the batch is never looped over.

    Args:
        eps: radius of the threat model in ``norm`` (the result is projected onto it).
        norm: :attr:`Norm.L2` or :attr:`Norm.LINF`.
        steps: maximum number of iterations.
        overshoot: η, the relative overshoot that pushes the iterate across the boundary.
        candidates: number of top classes considered, the label included (at least 2; capped at the number
            of classes).
        target: must be ``None``: DeepFool is untargeted.

    Cost per example: at most ``2 * steps`` forward passes (one with gradients at the iterate, one without at
    the overshot answer) and ``steps * (candidates − 1)`` backward passes; an example stops costing anything
    once misclassified (after a few iterations on undefended models).

    Raises:
        UsageError: a target policy is given, ``norm`` is not L2 or L∞, or a parameter is out of range.
    """

    def __init__(self, eps: float, norm: Norm | None = Norm.L2, steps: int = 50, overshoot: float = 0.02,
                 candidates: int = 10, target: str | None = None) -> None:
        if target is not None:
            raise UsageError("DeepFool is untargeted; remove the target policy (got target = "
                             f"{target!r})")
        super().__init__(eps, norm, target)
        if norm not in (Norm.L2, Norm.LINF):
            raise UsageError(f"DeepFool supports the L2 and Linf norms, got {norm.value if norm else None}")
        # candidates: the label and at least one other class
        require_at_least("DeepFool", {"steps": (steps, 1), "overshoot": (overshoot, 0), "candidates": (candidates, 2)})
        self.steps = int(steps)
        self.overshoot = float(overshoot)
        self.candidates = int(candidates)

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.targeted:  # unreachable through the constructor; kept for subclasses that set target later
            raise UsageError("DeepFool is untargeted; remove the target policy")
        n = x.shape[0]
        x_adv = x.clone()  # the answer so far: the clean point, then the latest overshot iterate
        total = torch.zeros_like(x)  # r̂: the iterate is x + r̂, the answer x + (1 + η) r̂
        active = torch.ones(n, dtype=torch.bool, device=x.device)
        others: torch.Tensor | None = None  # (N, candidates − 1) candidate classes, fixed at the clean input

        for _ in range(self.steps):
            index = active.nonzero().squeeze(1)
            if index.numel() == 0:
                break
            x_i = (x[index] + total[index]).requires_grad_(True)
            logits = model(x_i)
            labels = y[index]
            if others is None:  # first iteration: every example is active, so ``index`` is the whole batch
                others = self._candidate_classes(logits.detach(), y)
            # The paper's stopping rule: an iterate that is misclassified already is an answer (and a smaller
            # one than its overshot version); at the first iteration this retires misclassified clean inputs.
            still = (logits.argmax(dim=1) == labels).detach()
            crossed = index[~still]
            x_adv[crossed] = x_i.detach()[~still]
            active[crossed] = False
            if not bool(still.any()):
                break

            value, gradient = self._nearest_boundary(logits, labels, others[index], x_i, still)
            with torch.no_grad():
                moving = index[still]
                step = self._step(value[still], gradient[still])
                # r̂ keeps only what the box lets through, so steps past an edge do not pile up in r̂.
                total[moving] = (x[moving] + total[moving] + step).clamp(0.0, 1.0) - x[moving]
                x_adv[moving] = (x[moving] + (1 + self.overshoot) * total[moving]).clamp(0.0, 1.0)
                # Overshooting r̂ (not only the last step) crosses a boundary that the iterates approach
                # without reaching (curvature, clipped coordinates): retire examples whose answer is adversarial.
                fooled = model(x_adv[moving]).argmax(dim=1) != y[moving]
                active[moving[fooled]] = False
        return x_adv

    def _nearest_boundary(self, logits: torch.Tensor, labels: torch.Tensor, candidate_classes: torch.Tensor,
                          x_i: torch.Tensor, still: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """f'_l̂ and w'_l̂ of the closest linearised boundary, per example (rows where ``still`` is False unused).

        One ``autograd.grad`` per candidate class on the batch-summed difference f'_k gives every example its
        own w'_k at once. Gradient components that point out of the image box at coordinates already on its
        edge are zeroed: the step could not move them (the clip would undo it), so the distance and the step
        are those to the boundary within the face of the box the iterate lies on.
        """
        mask = still.to(logits.dtype)  # examples already misclassified contribute nothing
        label_logit = logits.gather(1, labels.unsqueeze(1)).squeeze(1)
        point = x_i.detach()
        at_lower, at_upper = point <= 0.0, point >= 1.0
        best_ratio = torch.full_like(label_logit, float("inf")).detach()
        best_value = torch.zeros_like(best_ratio)
        best_gradient = torch.zeros_like(point)
        for j in range(candidate_classes.shape[1]):
            value = logits.gather(1, candidate_classes[:, j:j + 1]).squeeze(1) - label_logit
            last = j == candidate_classes.shape[1] - 1
            (gradient,) = torch.autograd.grad((value * mask).sum(), x_i, retain_graph=not last)
            gradient = gradient.masked_fill((at_lower & (gradient < 0)) | (at_upper & (gradient > 0)), 0.0)
            value = value.detach()
            ratio = value.abs() / self._dual_norm(gradient).clamp_min(_TINY)
            closer = ratio < best_ratio
            best_ratio = torch.where(closer, ratio, best_ratio)
            best_value = torch.where(closer, value, best_value)
            best_gradient[closer] = gradient[closer]
        return best_value, best_gradient

    def _candidate_classes(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The ``candidates`` − 1 classes other than ``y`` with the largest logits, per example."""
        count = min(self.candidates, logits.shape[1]) - 1
        without_label = logits.scatter(1, y.unsqueeze(1), float("-inf"))
        return without_label.topk(count, dim=1).indices

    def _dual_norm(self, gradient: torch.Tensor) -> torch.Tensor:
        """‖w‖_q per example: L2 is self-dual; the dual of L∞ is L1."""
        return distance(gradient, Norm.L1 if self.norm is Norm.LINF else Norm.L2)

    def _step(self, value: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
        """r_i: the smallest step in ``norm`` that reaches the linearised boundary f'_l̂ + ⟨w'_l̂, r⟩ = 0."""
        shape = (-1, *([1] * (gradient.dim() - 1)))
        if self.norm is Norm.LINF:
            scale = value.abs() / distance(gradient, Norm.L1).clamp_min(_TINY)
            return scale.view(shape) * gradient.sign()
        scale = value.abs() / distance(gradient, Norm.L2).pow(2).clamp_min(_TINY)
        return scale.view(shape) * gradient

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "steps": self.steps, "overshoot": self.overshoot,
                "candidates": self.candidates}

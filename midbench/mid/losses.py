"""MID's multi-consistency distillation losses (Zhang et al., TPAMI 2024, arXiv:2404.03340, Sec. 3; docs/mid.md,
"Stage 2").

``p(f)`` is the softmax of a feature map over its channel axis at every spatial position, and ``KL(P‖Q)`` is
averaged over *every element* (batch × channels × positions), the reduction of the release's ``nn.KLDivLoss()``
(PyTorch 0.4.1's default ``size_average=True``): the per-position KL summed over channels, divided by the
number of channels C. That is the scale the release's weights (1.5 for AC, 0.8 for CC) were chosen for; summing
over channels instead would make AC and CC C times larger (64× for LeNet, 512× for ResNet-18) and change the
balance AC : CC : LC. With the clean teacher feature ``f_t = E_t(x)`` (no gradient):

- adversarial consistency  ``AC = KL(p(f_t) ‖ p(E_s(x̃)))``            (feature level)
- cyclic consistency       ``CC = KL(p(f_t) ‖ p(E_t(D_t(E_s(x̃)))))``   (pixel level, through the frozen D_t, E_t)
- label consistency        ``LC = CE(C(E_s(x̃)), y)``                   (prediction level)

The target distribution is given as log-probabilities and exponentiated here, never passed as the "input"
side: the release gave ``kl_div`` log-probabilities as its *target*, which is 0 with no gradient in PyTorch
0.4 and NaN today (fault 3 of docs/mid.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

#: ``encode(normalised x) -> (feature, context)`` of the student at some parameters
StudentEncode = Callable[[torch.Tensor], tuple[torch.Tensor, object]]


@dataclass(frozen=True)
class ConsistencyWeights:
    """Weights of LC, AC and CC in a task's loss; the release's meta-train weights are (1.0, 1.5, 0.8)."""

    label: float = 1.0
    adversarial: float = 1.5
    cyclic: float = 0.8

    def meta_test(self) -> ConsistencyWeights:
        """The meta-test weights: 1 for every term the ablation keeps, 0 for a term switched off."""
        return ConsistencyWeights(*(1.0 if weight > 0 else 0.0 for weight in
                                    (self.label, self.adversarial, self.cyclic)))


def channel_log_softmax(feature: torch.Tensor) -> torch.Tensor:
    """log p(f): log-softmax over the channel axis (dim 1) at each position."""
    return torch.log_softmax(feature.flatten(2) if feature.dim() > 2 else feature.unsqueeze(-1), dim=1)


def channel_kl(target_log_p: torch.Tensor, feature: torch.Tensor) -> torch.Tensor:
    """KL(P‖Q) with P = exp(target_log_p), Q = p(feature), averaged over every element (batch, channels and
    positions) like the release's ``nn.KLDivLoss()``: Σ_c KL at a position, divided by C, mean over batch and
    positions."""
    log_q = channel_log_softmax(feature)
    return (target_log_p.exp() * (target_log_p - log_q)).mean()


@dataclass
class TaskLoss:
    """One task's consistency terms (each a scalar tensor) and the student's logits on it."""

    label: torch.Tensor
    adversarial: torch.Tensor
    cyclic: torch.Tensor
    logits: torch.Tensor

    def weighted(self, weights: ConsistencyWeights) -> torch.Tensor:
        total = self.label.new_zeros(())
        # Skipping zero-weight terms keeps an ablated term out of the graph entirely (and its cost).
        for weight, term in ((weights.label, self.label), (weights.adversarial, self.adversarial),
                             (weights.cyclic, self.cyclic)):
            if weight:
                total = total + weight * term
        return total


def task_loss(encode: StudentEncode, x_task: torch.Tensor, y: torch.Tensor, target_log_p: torch.Tensor,
              normalize: nn.Module, teacher_encoder: nn.Module, decoder: nn.Module, head: nn.Module,
              weights: ConsistencyWeights) -> TaskLoss:
    """LC, AC and CC of the student (``encode``) on one task's images ``x_task`` in [0, 1].

    Cost: one student-encoder forward; the head, and the decoder + teacher encoder, only when LC resp. CC has a
    non-zero weight.
    """
    return task_losses(encode, [x_task], y, target_log_p, normalize, teacher_encoder, decoder, head, weights)[0]


def task_losses(encode: StudentEncode, x_tasks: Sequence[torch.Tensor], y: torch.Tensor,
                target_log_p: torch.Tensor, normalize: nn.Module, teacher_encoder: nn.Module, decoder: nn.Module,
                head: nn.Module, weights: ConsistencyWeights) -> list[TaskLoss]:
    """:func:`task_loss` of several tasks (each ``y``'s batch of images) through **one** forward per module.

    The tasks are concatenated along the batch axis and each term is reduced over its own task's rows, so the
    values equal the per-task ones up to floating-point summation order — provided no module couples the rows of
    a batch (BatchNorm in training mode does: the caller must then pass one task at a time, see
    :func:`couples_batch_rows`). One large forward instead of several small ones saves the per-call overhead of
    every module and of autograd (goal P6 of docs/performance.md).
    """
    x = x_tasks[0] if len(x_tasks) == 1 else torch.cat(list(x_tasks))
    feature, context = encode(normalize(x))
    zero = feature.new_zeros(())
    logits = head(feature)
    # the cyclic path's teacher feature, one forward for all tasks
    cycled = teacher_encoder(normalize(decoder(feature, context))) if weights.cyclic else None
    rows = len(y)
    losses = []
    for task in range(len(x_tasks)):
        own = slice(task * rows, (task + 1) * rows)
        losses.append(TaskLoss(
            label=nn.functional.cross_entropy(logits[own], y) if weights.label else zero,
            adversarial=channel_kl(target_log_p, feature[own]) if weights.adversarial else zero,
            cyclic=channel_kl(target_log_p, cycled[own]) if cycled is not None else zero,
            logits=logits[own]))
    return losses


def couples_batch_rows(*modules: nn.Module) -> bool:
    """Whether a forward through ``modules`` mixes the rows of its batch: BatchNorm in training mode normalises
    with the batch's statistics (and updates its running ones), so several tasks in one batch would each be
    normalised with the others' statistics — a different objective. Per-row layers (convolutions, LayerNorm,
    GroupNorm, BatchNorm in eval mode) do not."""
    return any(isinstance(layer, nn.modules.batchnorm._BatchNorm) and layer.training
               for module in modules for layer in module.modules())

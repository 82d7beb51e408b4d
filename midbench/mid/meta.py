"""One MID meta-learning step (Zhang et al., TPAMI 2024, arXiv:2404.03340, Alg. 1; docs/mid.md).

Given the task inputs ``X = [x, a_1(x), …, a_n(x)]`` (task 0 clean) and a held-out adversarial task ``v``:

1. meta-train  ``L_tr(θ)   = Σ_{j≠v} w·(LC, AC, CC)(θ, X_j)``;
2. inner step  ``θ' = θ − α ∇_θ L_tr(θ)``, computed functionally (``torch.func.functional_call``) so that θ'
   remains a differentiable function of θ — the release copied θ' into a fresh module with
   ``load_state_dict``, which cut the graph so the meta-test never reached the student (fault 1);
3. meta-test   ``L_te(θ')  = (LC + AC + CC)(θ', X_v)`` on the *held-out* task (the release used a leftover
   loop variable, fault 2);
4. gradient    ``∇_θ [L_tr(θ) + L_te(θ')]``, written into the student's ``.grad`` for the outer optimiser.

Second-order (default) keeps ``create_graph=True`` in step 2, so step 4 contains the Hessian-vector product
``−α ∇²L_tr · ∇_{θ'} L_te``. First-order treats ``∇L_tr`` as a constant (first-order MAML, Finn et al. 2017),
so ``∂θ'/∂θ = I``. In both cases ``∇_θ L_tr`` is the inner gradient already computed in step 2 and is reused
rather than recomputed, which saves one backward pass through every meta-train task.

``meta=False`` (the ``--no-meta`` ablation) is plain multi-task distillation: ``∇_θ Σ_j w·(LC, AC, CC)(θ, X_j)``
over all tasks, no held-out task and no inner step.

``batch_tasks`` runs the meta-train tasks through each module in one forward (concatenated along the batch axis,
each loss reduced over its own rows): the same objective, as long as no module couples a batch's rows
(BatchNorm in training mode does, and then the step falls back to one forward per task). Off by default: on a
CPU it is slower (``docs/performance.md``, P6).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.func import functional_call

from midbench.mid.losses import (
    ConsistencyWeights,
    StudentEncode,
    TaskLoss,
    channel_log_softmax,
    couples_batch_rows,
    task_losses,
)
from midbench.mid.parts import MidModules
from midbench.runtime.data_parallel import mean_over_slices


@dataclass(frozen=True)
class MetaSettings:
    """The stage-2 hyper-parameters of one step (release values as defaults)."""

    weights: ConsistencyWeights = ConsistencyWeights()
    inner_lr: float = 1e-4
    first_order: bool = False
    meta: bool = True
    #: the release may draw the clean task as the meta-test task too; midbench's default holds out attacks only
    clean_can_be_held_out: bool = False
    #: run the meta-train tasks through each module as one batch where no module couples a batch's rows (same
    #: losses up to summation order, fewer and larger forwards); False: one forward per task, like the release
    batch_tasks: bool = False

    def held_out_choices(self, n_tasks: int) -> range:
        """The task indices the held-out (meta-test) task is drawn from, uniformly: ``1..n`` (the adversarial
        tasks), or ``0..n`` with ``clean_can_be_held_out``."""
        return range(0 if self.clean_can_be_held_out else 1, n_tasks)

    def draw_held_out(self, n_tasks: int, generator: torch.Generator) -> int:
        """One uniform draw from :meth:`held_out_choices` (resampled every step, Alg. 1 of the paper)."""
        choices = self.held_out_choices(n_tasks)
        return choices[int(torch.randint(len(choices), (1,), generator=generator))]


@dataclass
class MetaStepResult:
    """What one step measured (all detached)."""

    objective: torch.Tensor  # L_tr(θ) + L_te(θ') (or the plain distillation loss without meta)
    meta_train: torch.Tensor
    meta_test: torch.Tensor
    held_out: int | None
    clean_logits: torch.Tensor
    terms: dict[str, float]
    #: ‖θ' − θ‖ / ‖θ‖ of the inner step (None without meta): how far the meta-test point is from θ — at a
    #: small α the meta-test loss is evaluated almost at θ and meta-learning differs little from multi-tasking
    inner_step: float | None = None


def _encoder_at(encoder: torch.nn.Module, params: dict[str, torch.Tensor],
                buffers: dict[str, torch.Tensor]) -> StudentEncode:
    """The student encoder evaluated at ``params`` (a pure function of them, for differentiation)."""
    return lambda x: functional_call(encoder, {**params, **buffers}, (x,), {"return_context": True})


def meta_step(modules: MidModules, tasks: Sequence[torch.Tensor], y: torch.Tensor, held_out: int | None,
              settings: MetaSettings) -> MetaStepResult:
    """Compute one step's gradient and *add* it to the student encoder's ``.grad`` (zero them before).

    Args:
        tasks: ``[x, a_1(x), …]``, each of ``x``'s shape, images in [0, 1]; task 0 must be the clean batch.
        held_out: index of the meta-test task, one of ``settings.held_out_choices(len(tasks))`` (ignored, and may be
            None, when ``settings.meta`` is off).

    Only parameters with ``requires_grad`` are differentiated; the teacher parts must be frozen by the caller.
    """
    encoder = modules.student_encoder
    named = {name: p for name, p in encoder.named_parameters() if p.requires_grad}
    buffers = dict(encoder.named_buffers())
    with torch.no_grad():  # the clean teacher feature is a fixed target
        target_log_p = channel_log_softmax(modules.teacher_encoder(modules.normalize(tasks[0])))

    batched = settings.batch_tasks and not couples_batch_rows(encoder, modules.teacher_encoder, modules.decoder,
                                                              modules.head)

    def losses_at(params: dict[str, torch.Tensor], indices: Sequence[int], weights: ConsistencyWeights
                  ) -> list[TaskLoss]:
        encode = _encoder_at(encoder, params, buffers)
        groups = [list(indices)] if batched else [[j] for j in indices]
        return [loss for group in groups
                for loss in task_losses(encode, [tasks[j] for j in group], y, target_log_p, modules.normalize,
                                        modules.teacher_encoder, modules.decoder, modules.head, weights)]

    weights = settings.weights
    if not settings.meta:
        train_losses = losses_at(named, range(len(tasks)), weights)
        objective = sum(loss.weighted(weights) for loss in train_losses)
        _accumulate(named, torch.autograd.grad(objective, list(named.values()), allow_unused=True))
        return _result(objective, objective, objective.new_zeros(()), None, train_losses, train_losses[0].logits)

    choices = settings.held_out_choices(len(tasks))
    if held_out not in choices:
        raise ValueError(f"held-out task must be one of tasks {choices.start}..{len(tasks) - 1}, got {held_out}")
    train_indices = [j for j in range(len(tasks)) if j != held_out]
    train_losses = losses_at(named, train_indices, weights)
    meta_train = sum(loss.weighted(weights) for loss in train_losses)
    inner = torch.autograd.grad(meta_train, list(named.values()), create_graph=not settings.first_order,
                                allow_unused=True)
    inner = [torch.zeros_like(p) if g is None else g for p, g in zip(named.values(), inner, strict=True)]
    # θ' is one point for the whole global batch: under torchrun the slices' inner gradients are averaged,
    # weighted by slice size and differentiably for the second-order term, in one collective for all parameters
    # (so that every process runs the same collectives in the same order)
    flat = mean_over_slices(torch.cat([g.reshape(-1) for g in inner]))
    step = [part.view_as(g) for part, g in zip(flat.split([g.numel() for g in inner]), inner, strict=True)]
    fast = {name: p - settings.inner_lr * g for (name, p), g in zip(named.items(), step, strict=True)}
    with torch.no_grad():
        theta = torch.cat([p.reshape(-1) for p in named.values()])
        inner_step = float(settings.inner_lr * flat.norm() / theta.norm().clamp_min(torch.finfo(theta.dtype).tiny))
    test_loss = losses_at(fast, [held_out], weights.meta_test())[0]
    meta_test = test_loss.weighted(weights.meta_test())
    outer = torch.autograd.grad(meta_test, list(named.values()), allow_unused=True)
    _accumulate(named, [g.detach() + (0 if o is None else o) for g, o in zip(inner, outer, strict=True)])
    clean_logits = test_loss.logits if held_out == 0 else train_losses[0].logits
    return _result(meta_train + meta_test, meta_train, meta_test, held_out, train_losses + [test_loss],
                   clean_logits, inner_step)


def _accumulate(named: dict[str, torch.Tensor], grads: Sequence[torch.Tensor | None]) -> None:
    for parameter, grad in zip(named.values(), grads, strict=True):
        if grad is None:
            continue
        grad = grad.detach()
        parameter.grad = grad.clone() if parameter.grad is None else parameter.grad + grad


def _result(objective: torch.Tensor, meta_train: torch.Tensor, meta_test: torch.Tensor, held_out: int | None,
            losses: list[TaskLoss], clean_logits: torch.Tensor, inner_step: float | None = None) -> MetaStepResult:
    terms = {name: float(sum(getattr(loss, name).detach() for loss in losses)) / len(losses)
             for name in ("label", "adversarial", "cyclic")}
    return MetaStepResult(objective.detach(), meta_train.detach(), meta_test.detach(), held_out,
                          clean_logits.detach(), terms, inner_step)

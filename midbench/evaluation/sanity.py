"""Sanity checks of an evaluation: flags that say "these robust accuracies may be an overestimate".

The checks follow the warnings of AutoAttack (Croce & Hein, "Reliable evaluation of adversarial robustness with
an ensemble of diverse parameter-free attacks", ICML 2020, section "checks" of the reference code) and the
checklist of Carlini et al., "On Evaluating Adversarial Robustness" (arXiv:1902.06705, 2019): outputs that are
probabilities rather than logits, randomised outputs, zero input gradients, a black-box attack beating the
white-box ones, robust accuracy that rises with ε or with the number of iterations, and a forward pass that runs
autograd itself (a defense that optimises at test time). Each symptom is a classic sign of gradient masking or
obfuscated gradients (Athalye, Carlini & Wagner, ICML 2018): the gradient attacks fail for a reason other than
robustness.

Flags never change a number. They come from cheap probes on a few examples (:func:`probe_flags`), from the
evaluation's own per-example matrix (:func:`square_flags`) and, only when asked for, from short extra sweeps
(:func:`eps_sweep`, :func:`steps_sweep`, judged by :func:`rise_flags`). A flag is ``{"code", "message"}``;
``docs/flags.md`` says what each code means and what to do about it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from midbench.attacks.base import frozen_eval_mode
from midbench.attacks.randomness import example_seeds, per_example_generators
from midbench.attacks.specs import AttackRegistry, AttackSpec, ResolvedAttack
from midbench.data.datasets import TensorSplit
from midbench.evaluation.engine import Evaluation, evaluate
from midbench.evaluation.expected import BELOW_EXPECTED_RANGE
from midbench.evaluation.metrics import CATASTROPHIC_OVERFITTING, catastrophic_overfitting, summarise

Flag = dict[str, str]

#: every flag code, in the order flags are reported
CODES = ("probability-outputs", "random-outputs", "zero-gradients", "autograd-in-forward", "square-beats-whitebox",
         "gradient-free-beats-gradient", "catastrophic-overfitting", "training-overfitting",
         "accuracy-rises-with-eps", "accuracy-rises-with-steps", BELOW_EXPECTED_RANGE)
#: held-out accuracy under the run's single-step training attack this far (absolute) above its held-out PGD
#: accuracy, in the last epoch's log, flags the checkpoint (``training-overfitting``)
TRAINING_GAP = 0.3
#: examples the model probes run on (the first clean-correct ones): enough to see a systematic symptom, cheap
PROBE_EXAMPLES = 64
#: examples the opt-in ε and step sweeps attack (the first clean-correct ones)
SWEEP_EXAMPLES = 256
#: ε of the ε sweep, as multiples of the evaluation's L∞ ε
EPS_MULTIPLIERS = (0.25, 0.5, 1.0)
#: steps of the steps sweep, as multiples of the sweep attack's own steps (PGD-L∞: 10, 40, 160)
STEPS_MULTIPLIERS = (0.25, 1.0, 4.0)
#: registry entry the sweeps run: a plain, well-understood white-box attack
SWEEP_ATTACK = "pgd-linf"
#: outputs within this of [0, 1] with rows summing to 1 within it look like probabilities (AutoAttack's 1e-5)
PROBABILITY_TOLERANCE = 1e-5
#: two forwards differing by more than this (relative to the largest |logit|, at least 1) are random (AutoAttack
#: uses an absolute 1e-4; the relative form keeps nondeterministic GPU reductions on large logits quiet)
RANDOM_TOLERANCE = 1e-4
#: forwards the randomness probe compares
RANDOM_FORWARDS = 3
#: Square beating the white-box attacks on more than this share of the examples (AutoAttack: 0.2 points), and on
#: more than one example, is flagged
SQUARE_MARGIN = 0.002
#: a rise of robust accuracy is flagged when it is more than this share of the examples and more than one example
RISE_MARGIN = 0.01

SQUARE = "autoattack:square"


def make_flag(code: str, message: str) -> Flag:
    """A flag as stored in the result document.

    Raises:
        ValueError: ``code`` is not one of :data:`CODES` (a bug).
    """
    if code not in CODES:
        raise ValueError(f"unknown flag code {code!r}")
    return {"code": code, "message": message}


def sort_flags(flags: Sequence[Flag]) -> list[Flag]:
    """Flags in the order of :data:`CODES` (stable for equal codes), so results read the same every run."""
    return sorted(flags, key=lambda flag: CODES.index(flag["code"]))


def first_correct(clean_correct: np.ndarray, limit: int) -> np.ndarray:
    """Indices of the first ``limit`` examples classified correctly; the first ``limit`` examples if none is.

    The probes look at the examples the attacks work on; a model that gets everything wrong is still probed.
    """
    correct = np.flatnonzero(clean_correct)
    chosen = correct if correct.size else np.arange(clean_correct.shape[0])
    return chosen[:limit]


# ------------------------------------------------------------------------------------------------ model probes

def probability_flags(outputs: torch.Tensor, tolerance: float = PROBABILITY_TOLERANCE) -> list[Flag]:
    """``probability-outputs`` when every row of ``outputs`` lies in [0, 1] and sums to 1 (AutoAttack's check).

    Attacks and their losses expect logits: cross-entropy on probabilities saturates, so gradient attacks
    stall and robust accuracy is overestimated.

    Args:
        outputs: the model's outputs (N × classes) on clean inputs.
    """
    if outputs.numel() == 0 or outputs.dim() != 2:
        return []
    rows_sum_to_one = ((outputs.sum(dim=1) - 1.0).abs() <= tolerance).all()
    in_unit_interval = float(outputs.min()) >= -tolerance and float(outputs.max()) <= 1.0 + tolerance
    if not (in_unit_interval and bool(rows_sum_to_one)):
        return []
    return [make_flag("probability-outputs", f"the model's outputs on {outputs.shape[0]} examples are in [0, 1] and "
                                             "sum to 1: probabilities, not logits")]


def random_flags(outputs: Sequence[torch.Tensor], tolerance: float = RANDOM_TOLERANCE) -> list[Flag]:
    """``random-outputs`` when repeated forwards of the same inputs (eval mode) differ (AutoAttack's check).

    A randomised defense needs an attack that averages over its randomness (EOT, Athalye et al. 2018); plain
    gradient attacks follow one random draw and overestimate robustness.

    Args:
        outputs: the outputs (N × classes) of two or more forwards of the same batch.
    """
    if len(outputs) < 2 or outputs[0].numel() == 0:
        return []
    first = outputs[0].float()
    scale = max(1.0, float(first.abs().max()))
    largest = max(float((other.float() - first).abs().max()) for other in outputs[1:])
    if largest <= tolerance * scale:
        return []
    labels = first.argmax(1)
    changed = sum(int((other.argmax(1) != labels).sum()) for other in outputs[1:])
    return [make_flag("random-outputs", f"{len(outputs)} forward passes of the same {first.shape[0]} inputs differ "
                                        f"(largest output change {largest:.3g}; {changed} predictions changed)")]


def zero_gradient_flags(gradients: torch.Tensor) -> list[Flag]:
    """``zero-gradients`` when the input gradient of the loss is exactly zero for some examples (AutoAttack).

    A gradient attack cannot move an example whose gradient is zero: a quantising, thresholding or saturated
    layer hides the direction that a black-box attack still finds.

    Args:
        gradients: per-example input gradients of the cross-entropy (N × ...).
    """
    if gradients.numel() == 0:
        return []
    zero = int((gradients.flatten(1) == 0).all(dim=1).sum())
    if zero == 0:
        return []
    count = int(gradients.shape[0])
    return [make_flag("zero-gradients", f"the input gradient of the cross-entropy is exactly zero on {zero} of "
                                        f"{count} examples ({100 * zero / count:.1f}%)")]


def autograd_flags(calls: Sequence[str]) -> list[Flag]:
    """``autograd-in-forward`` when the model's forward called autograd itself (``calls`` names what it called).

    Such a forward optimises at test time (purification, iterative inference); the gradient an attacker sees
    through it is usually obfuscated, and only an adaptive attack (e.g. BPDA, Athalye et al. 2018) is reliable.
    """
    if not calls:
        return []
    names = ", ".join(sorted(set(calls)))
    return [make_flag("autograd-in-forward", f"the model's forward pass calls {names} ({len(calls)} calls in "
                                             "the probe forwards)")]


class AutogradCallRecorder(TorchFunctionMode):
    """Records calls of ``torch.autograd.grad``, ``torch.autograd.backward`` and ``Tensor.backward`` while active.

    Why a ``TorchFunctionMode`` rather than patching ``torch.autograd.grad``: a model module may have imported
    ``grad`` by name before the probe, so a patched attribute would never be seen. All three functions hand
    themselves to ``__torch_function__`` whenever a mode is active (torch.overrides), whatever name they were
    called by; functions built on them (``torch.autograd.functional.*``) are caught too. ``torch.func``
    transforms do not go through them and are not detected.
    """

    WATCHED = {torch.autograd.grad: "torch.autograd.grad", torch.autograd.backward: "torch.autograd.backward",
               torch.Tensor.backward: "Tensor.backward"}

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        name = self.WATCHED.get(func)
        if name is not None:
            self.calls.append(name)
        # The mode is switched off while its handler runs, so this call (and autograd inside it) is not recorded
        # twice: Tensor.backward counts once, not also as the torch.autograd.backward it calls.
        return func(*args, **(kwargs or {}))


@contextmanager
def _isolated_rng(device: torch.device) -> Iterator[None]:
    """Probes run on a forked RNG, so a random model's draws here never shift the evaluation's."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        yield


def probe_flags(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> tuple[list[Flag], dict[str, Any]]:
    """Probe ``model`` on a few examples: probability outputs, random outputs, zero gradients, autograd in forward.

    Every forward runs in eval mode with frozen parameters, under :class:`AutogradCallRecorder`, on a forked RNG;
    the gradient itself is taken outside the recorder (it is the probe's own backward, not the model's).

    Args:
        images: float inputs in [0, 1] on the model's device (a few clean-correct examples).
        labels: their labels.

    Returns:
        The flags and what was measured (``examples``, ``zero_gradient_fraction``), for the result document.
    """
    if images.shape[0] == 0:
        return [], {"examples": 0}
    recorder = AutogradCallRecorder()
    with _isolated_rng(images.device), frozen_eval_mode(model):
        with recorder, torch.no_grad():
            outputs = [model(images) for _ in range(RANDOM_FORWARDS)]
        inputs = images.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            with recorder:
                logits = model(inputs)
            # Summed, not averaged: each example's gradient is that of its own loss (eval mode has no batch
            # interaction), and a tiny mean-scaled gradient cannot underflow to a spurious zero.
            loss = nn.functional.cross_entropy(logits.float(), labels, reduction="sum")
            if loss.requires_grad:
                (gradient,) = torch.autograd.grad(loss, inputs, allow_unused=True)
            else:  # the forward detached its output (no_grad or .detach() inside): no gradient reaches the input
                gradient = None
    if gradient is None:
        gradient = torch.zeros_like(images)
    zero_fraction = float((gradient.flatten(1) == 0).all(dim=1).float().mean())
    flags = [*probability_flags(outputs[0]), *random_flags(outputs), *zero_gradient_flags(gradient),
             *autograd_flags(recorder.calls)]
    return flags, {"examples": int(images.shape[0]), "zero_gradient_fraction": zero_fraction}


# ---------------------------------------------------------------------------------------- from the evaluation

def is_whitebox_gradient(attack: ResolvedAttack) -> bool:
    """Whether ``attack`` differentiates the model on an Lp ball (the attacks Square is compared with)."""
    return attack.norm is not None and attack.uses_gradients


def square_flags(evaluation: Evaluation) -> list[Flag]:
    """``square-beats-whitebox``: the black-box Square attack breaks examples that every white-box gradient attack
    of its norm (at an ε at least Square's) left robust, on more than 0.2% of the examples (AutoAttack's check,
    Croce & Hein 2020; Carlini et al. 2019, "gradient-free attacks should not beat gradient-based ones").

    Per example, not per attack: the share of examples robust to all those white-box attacks but not to Square
    is exactly how much Square lowers the robust accuracy when it runs after them, as in AutoAttack. AutoAttack
    standard rows are checked the same way from their recorded components (Square runs last in them). On top of
    AutoAttack's 0.2 points, a single example is never enough: on the few dozen examples of a quick run, one
    example is several points and within the luck of a random search; from 500 examples on, the rule is
    AutoAttack's own.

    Only under the white-box protocol: under ``transfer`` every attack, Square included, attacks the source
    model, so Square beating the gradient attacks there says how adversarial examples transfer, not whether the
    evaluated model masks gradients.
    """
    if evaluation.protocol != "whitebox" or not evaluation.outcomes:
        return []
    n = int(evaluation.clean_correct.shape[0])
    flags = []
    for outcome in evaluation.outcomes:
        square = outcome.attack
        if square.implementation != SQUARE or square.norm is None:
            continue
        whitebox = [other for other in evaluation.outcomes
                    if other.attack.norm is square.norm and is_whitebox_gradient(other.attack)
                    and other.attack.eps >= square.eps * (1 - 1e-6)]
        if not whitebox or not n:
            continue
        survive_whitebox = np.logical_and.reduce([other.robust for other in whitebox])
        broken = int((survive_whitebox & ~outcome.robust).sum())
        if broken > 1 and broken / n > SQUARE_MARGIN:
            names = ", ".join(other.attack.key for other in whitebox)
            flags.append(make_flag("square-beats-whitebox", f"{square.key} (black-box) fools {broken} of {n} examples "
                                   f"({100 * broken / n:.1f}%) that every white-box attack ({names}) left robust"))
    for outcome in evaluation.outcomes:
        components = outcome.details.get("components") or {}
        if outcome.attack.implementation != "autoattack:standard" or "square" not in components:
            continue
        before = [value for name, value in components.items() if name != "square"]
        # components are shares of all n examples; the drop counts examples (rounded: float shares)
        if before and round((min(before) - components["square"]) * n) > 1 \
                and min(before) - components["square"] > SQUARE_MARGIN:
            drop = min(before) - components["square"]
            flags.append(make_flag("square-beats-whitebox", f"in {outcome.attack.key}, Square lowers the robust "
                                   f"accuracy left by APGD and FAB by {100 * drop:.2f} points"))
    return flags


# ------------------------------------------------------------------------------------------ opt-in sweeps

def rise_flags(points: Sequence[tuple[float, float]], n: int, code: str, what: str) -> list[Flag]:
    """``accuracy-rises-with-eps`` / ``accuracy-rises-with-steps``: a stronger attack (larger ε, more steps) must
    not leave more examples robust (Carlini et al. 2019, "verify iterative attacks perform better than
    single-step ones" and "increasing the distortion bound increases attack success").

    A rise is flagged when it is more than :data:`RISE_MARGIN` of the examples and more than one example, so
    the noise of random starts on a handful of examples does not raise it.

    Args:
        points: (strength, robust accuracy) pairs in order of increasing strength.
        n: examples each accuracy was measured on.
        code: the flag code to raise.
        what: the strength's name in the message (``ε``, ``steps``).
    """
    worst: tuple[float, int, int] | None = None
    for later in range(1, len(points)):
        for earlier in range(later):
            rise = points[later][1] - points[earlier][1]
            if rise > RISE_MARGIN and rise * n > 1 + 1e-9 and (worst is None or rise > worst[0]):
                worst = (rise, earlier, later)
    if worst is None:
        return []
    rise, earlier, later = worst
    (low, low_acc), (high, high_acc) = points[earlier], points[later]
    return [make_flag(code, f"robust accuracy rises from {100 * low_acc:.1f}% at {what} {low:.4g} to "
                            f"{100 * high_acc:.1f}% at {what} {high:.4g} (PGD-L∞, {n} examples)")]


def _sweep(model: nn.Module, data: TensorSplit, attacks: list[ResolvedAttack], device: torch.device,
           seed: int, batch_size: int) -> list[float]:
    """Robust accuracy of ``model`` on ``data`` under each attack, white-box, run one at a time.

    All the sweep's attacks share one key (``<id>@custom``), hence the same per-batch seeds: the points differ
    only in ε or steps, not in their random starts, which keeps the comparison fair on few examples.
    """
    accuracies = []
    for attack in attacks:
        evaluation = evaluate(model, data, [(attack, "unknown")], device=device, batch_size=batch_size, seed=seed)
        accuracies.append(float(evaluation.matrix[:, 0].mean()) if len(data) else 0.0)
    return accuracies


def eps_sweep(model: nn.Module, data: TensorSplit, base: AttackSpec, eps: float, *, device: torch.device, seed: int,
              batch_size: int, multipliers: Sequence[float] = EPS_MULTIPLIERS) -> list[tuple[float, float]]:
    """Robust accuracy under the registry entry ``base`` (PGD-L∞) at ``eps`` times each multiplier; step sizes
    written relative to ε scale with it, so each point is the same attack at another budget.

    Returns:
        (ε, robust accuracy) pairs in order of increasing ε.
    """
    attacks = [replace(base.resolve({"Linf": eps * factor}), version=0) for factor in sorted(multipliers)]
    accuracies = _sweep(model, data, attacks, device, seed, batch_size)
    return [(attack.eps, accuracy) for attack, accuracy in zip(attacks, accuracies, strict=True)]


def steps_sweep(model: nn.Module, data: TensorSplit, base: AttackSpec, eps: float, *, device: torch.device, seed: int,
                batch_size: int, multipliers: Sequence[float] = STEPS_MULTIPLIERS) -> list[tuple[float, float]]:
    """Robust accuracy under ``base`` (PGD-L∞ at ``eps``) with its steps times each multiplier (at least 1 step),
    step size unchanged: more steps of the same size can only search further.

    Returns:
        (steps, robust accuracy) pairs in order of increasing steps.
    """
    resolved = base.resolve({"Linf": eps})
    steps = sorted({max(1, round(int(resolved.params["steps"]) * factor)) for factor in multipliers})
    attacks = [replace(resolved, version=0, params={**resolved.params, "steps": count}) for count in steps]
    accuracies = _sweep(model, data, attacks, device, seed, batch_size)
    return [(count, accuracy) for count, accuracy in zip(steps, accuracies, strict=True)]


def overfitting_flags(evaluation: Evaluation) -> list[Flag]:
    """``catastrophic-overfitting`` (:func:`midbench.evaluation.metrics.catastrophic_overfitting`) from the
    evaluation's own matrix: the worst case over its known attacks against its AutoAttack column."""
    splits = [outcome.split for outcome in evaluation.outcomes]
    autoattack = [index for index, outcome in enumerate(evaluation.outcomes)
                  if outcome.attack.implementation == "autoattack:standard"
                  and outcome.attack.norm is not None and outcome.attack.norm.value == "Linf"]
    summary = summarise(evaluation.matrix, splits, autoattack)
    message = catastrophic_overfitting(summary["known_worst"], summary["autoattack"], evaluation.protocol)
    return [make_flag(CATASTROPHIC_OVERFITTING, message)] if message else []


def training_flags(metrics: dict[str, Any] | None) -> list[Flag]:
    """``training-overfitting``: the checkpoint's last logged epoch kept far more held-out examples under its
    single-step training attack than under PGD (:data:`TRAINING_GAP`; ``midbench.training.loop.evaluate_slice``)."""
    metrics = metrics or {}
    own = metrics.get("val_train_attack_acc")
    pgd = next((value for key, value in metrics.items() if key.startswith("val_pgd") and key.endswith("_acc")), None)
    if not isinstance(own, int | float) or not isinstance(pgd, int | float) or own - pgd < TRAINING_GAP:
        return []
    return [make_flag("training-overfitting",
                      f"in its last training epoch the model kept {100 * own:.1f}% of held-out examples under its "
                      f"single-step training attack but {100 * pgd:.1f}% under PGD: it overfitted to its training "
                      "attack (Wong et al. 2020); it is kept out of best AT and of any reference")]


#: a gradient-free attack breaking this share of the examples (and more than one) that survived the gradient
#: attacks at the same budget is flagged (AutoAttack's 0.2 points, as for Square)
GRADIENT_FREE_MARGIN = 0.002


def gradient_free_flags(model: nn.Module, data: TensorSplit, evaluation: Evaluation, registry: AttackRegistry,
                        dataset_eps: dict[str, float], device: torch.device, seed: int, batch_size: int
                        ) -> tuple[list[Flag], list[dict[str, Any]]]:
    """``gradient-free-beats-gradient``: at the top rung of each Lp threat model of the profile, the registry's
    random-noise attacks of the same norm and budget (gradient-free; Carlini et al. 2019) run on the examples
    the gradient attacks left robust. Breaking more than :data:`GRADIENT_FREE_MARGIN` of the examples there means
    the gradient attacks were misled (gradient masking). White-box only; it never changes a number.

    Returns the flags and what was measured (``sanity.gradient_free``)."""
    if evaluation.protocol != "whitebox" or not evaluation.curves:
        return [], []
    n = int(evaluation.clean_correct.shape[0])
    noise = [spec for spec in registry.attacks.values()
             if spec.family == "noise" and spec.norm is not None and spec.budget == ("eps",)]
    flags, measured = [], []
    for curve in evaluation.curves:
        top = curve.plan.rungs[-1] if curve.plan.rungs else None
        gradient = [a for a in (top.attacks if top else ()) if a.uses_gradients and a.norm is not None]
        if not gradient or curve.plan.threat_model.id in {spec.threat_model for spec in noise}:
            continue
        norm, eps = gradient[0].norm, min(a.eps for a in gradient)
        survivors = np.flatnonzero(curve.robust[:, -1])
        for spec in (spec for spec in noise if spec.norm is norm):
            attack = spec.resolve(dataset_eps, eps_override=eps)
            broken = _broken(model, data, survivors, attack, device, seed, batch_size)
            measured.append({"threat_model": curve.plan.threat_model.id, "strength": top.strength,
                             "attack": attack.key, "eps": eps, "survivors": int(survivors.size), "broken": broken})
            if broken > max(1, GRADIENT_FREE_MARGIN * n):
                flags.append(make_flag("gradient-free-beats-gradient",
                                       f"{attack.id} (random, ε {eps:g}) broke {broken} of the {survivors.size} "
                                       f"examples that {', '.join(a.id for a in gradient)} left robust at the top "
                                       f"of the {curve.plan.threat_model.id} ladder: the gradient attacks are "
                                       "misled (gradient masking)"))
    return flags, measured


def _broken(model: nn.Module, data: TensorSplit, indices: np.ndarray, attack: ResolvedAttack, device: torch.device,
            seed: int, batch_size: int) -> int:
    """How many of ``indices`` ``attack`` misclassifies (per-example randomness; the global RNG left as it was)."""
    if not indices.size:
        return 0
    built = attack.build(seed=seed, batch_size=batch_size)
    broken = 0
    with _isolated_rng(device):
        for start in range(0, indices.size, batch_size):
            chunk = indices[start:start + batch_size]
            subset = data.subset(torch.from_numpy(chunk))
            x, y = subset.as_float().to(device), subset.labels.to(device)
            with per_example_generators(example_seeds(seed + 7_919, chunk.tolist())):
                x_adv = built(model, x, y)
            with torch.no_grad():
                broken += int((model(x_adv).argmax(1) != y).sum())
    return broken

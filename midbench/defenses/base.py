"""The defense-task interface and the method catalogue.

A method is a :class:`DefenseTask` subclass, registered in :data:`METHODS` (the built-in ones) or named by the
user as ``--method module:Class`` (loaded like ``--model module:factory``; see "Your own defense" in the README).
Everything midbench needs to know about a method is on its class: its own options (a dataclass in ``Options``,
:mod:`midbench.defenses.options`; the command line, config and sweep files read them from there), whether it is
an adversarial-training baseline, and what a sweep's table says about a run (:meth:`DefenseTask.summary`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from midbench.artifacts.usermodel import SPEC_PATTERN, import_factory
from midbench.attacks.specs import ResolvedAttack
from midbench.catalog import Catalog
from midbench.config import SHARED_KEYS, TrainConfig
from midbench.data.datasets import DatasetSpec, TensorSplit
from midbench.defenses.options import as_values, build_options
from midbench.errors import UsageError
from midbench.runtime.distributed import SINGLE, Shard


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of all randomness in ``epoch`` (a fixed mix, so resumed epochs redraw the same numbers)."""
    return (seed * 1_000_003 + epoch * 7919 + 17) % (2**63 - 1)


#: trains (or resumes) a run with the given config in the given folder and returns its checkpoint
StageTrainer = Callable[[TrainConfig, Path], Path]


@dataclass(frozen=True)
class SetupContext:
    """What :meth:`DefenseTask.setup` may use: the run's folder, its training split and device, ``train_stage``
    to train a prerequisite run (MID's source model and teacher) with the same training loop — given by the loop,
    so that the methods never import it — and this process's place under torchrun (``shard``), for work done
    once for the whole split that the processes can share (MID's pool cache)."""

    out_dir: Path
    train_split: TensorSplit
    device: torch.device
    progress: bool
    train_stage: StageTrainer
    shard: Shard = SINGLE


class DefenseTask:
    """One training method: how a batch turns into a loss, and which attacks it trains against.

    ``loss(model, x, y)`` returns a dict with at least ``loss`` (a scalar to minimise) and ``logits`` (of the
    examples the training accuracy is measured on). ``train_attacks`` lists the attacks the method trains
    with, fully resolved, so evaluation can tell known from unknown attacks.
    """

    #: registry id of the method
    name: str = ""
    #: the paper the method comes from
    citation: str = ""
    #: the method's own options: a dataclass whose fields all have defaults (made with
    #: :func:`midbench.defenses.options.option`), filled from the command line (``--NAME`` for the built-in
    #: methods, ``--method-option NAME=VALUE`` for any), a config or sweep file (``NAME = VALUE``), and recorded
    #: in the checkpoint's config; None: no options
    Options: ClassVar[type | None] = None
    #: whether the method is an adversarial-training baseline: the leaderboard's Δ column compares every model
    #: with the best of them
    adversarial_training_baseline: ClassVar[bool] = False
    #: the option naming the model the method crafts its training attacks on (MID's ``source``): a sweep sets it
    #: to its transfer source, so the transfer protocol attacks the model the defense was trained against
    transfer_source_option: ClassVar[str | None] = None

    def __init__(self, config: TrainConfig, dataset: DatasetSpec) -> None:
        self.config = config
        self.dataset = dataset
        self.options = build_options(self.Options, self.name or type(self).__name__, config.options, SHARED_KEYS)

    def setup(self, model: nn.Module, context: SetupContext) -> None:
        """Prepare before the first epoch (also on resume): e.g. train earlier stages, add or freeze modules.
        The optimiser is built afterwards over the parameters that still require gradients."""

    def on_epoch_start(self, epoch: int, model: nn.Module) -> None:
        """Called at the start of every epoch, after the epoch's seeding (e.g. to refresh a cache)."""

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def scale_attacks(self, scale: float) -> None:
        """Train the coming epoch against the training attacks at ``scale`` of their budget (the ε warm-up of
        ``--eps-warmup``, :meth:`TrainConfig.attack_scale`); :attr:`train_attacks` stays at the full budget,
        which the checkpoint records. Called at the start of every epoch of a run with a warm-up, and once
        before set-up, so a method without one refuses before it trains anything (this default)."""
        raise UsageError(f"--eps-warmup does not apply to method {self.name or type(self).__name__}: it has no "
                         "training attack whose budget can ramp up; drop --eps-warmup")

    def step(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor,
             autocast: AbstractContextManager[Any] | None = None) -> dict[str, torch.Tensor]:
        """Write this batch's gradients into the parameters' ``.grad`` (zeroed by the caller) and return the
        outputs of :meth:`loss`. ``index`` holds the examples' positions in the training split; ``autocast``
        wraps the forward pass only (bf16 training), as PyTorch recommends. Methods whose gradient is not the
        gradient of one loss (MID's meta step) override this.

        Under torchrun the batch is this process's slice of the global batch, and the gradient written must be
        that of the **mean** loss over the slice: the loop combines the slices weighted by their sizes
        (:mod:`midbench.runtime.data_parallel`). A step that needs a quantity of the whole global batch forms it with
        :func:`midbench.runtime.data_parallel.mean_over_slices` (MID's inner update does)."""
        with autocast if autocast is not None else contextlib.nullcontext():
            outputs = self.loss(model, x, y)
        if torch.isfinite(outputs["loss"]):
            outputs["loss"].backward()
        return outputs

    @property
    def train_attacks(self) -> list[ResolvedAttack]:
        return []

    def should_stop(self, log: list[dict[str, Any]]) -> str | None:
        """Called after every epoch's held-out evaluation with the log so far (this epoch's record last):
        the reason to stop training now, or ``None`` to go on (the default).

        On a stop the loop records ``stopped_early`` in the log and the checkpoint metadata and keeps, as
        ``model.safetensors``, the model of the epoch with the best held-out PGD accuracy (``best.safetensors``).
        The decision must depend on the log only, so that ``--resume`` repeats it exactly."""
        return None

    def epoch_metrics(self) -> dict[str, float]:
        """Method-specific statistics of the epoch just trained, for its log record (default none): e.g. MID's
        relative inner step. Called after every epoch, with or without a validation slice."""
        return {}

    def validation_metrics(self, model: nn.Module, val_split: TensorSplit, device: torch.device
                           ) -> dict[str, float]:
        """Method-specific held-out metrics for this epoch's log record (default none), computed after the
        loop's clean and PGD accuracy. Must not touch the global random stream (``--resume`` is exact)."""
        return {}

    def selection_key(self, pgd_key: str) -> str:
        """The log key whose highest value picks ``best.safetensors`` (and the model kept after an early stop):
        by default the held-out PGD accuracy ``pgd_key``."""
        return pgd_key

    def describe(self) -> dict[str, Any]:
        """Method-specific hyper-parameters for the checkpoint metadata (default: the ``Options``)."""
        return as_values(self.options)

    def summary(self) -> str:
        """What a sweep's table says about a run of this method beyond its method, arch, epochs and batch (e.g.
        TRADES' β); empty by default."""
        return ""

    def training_steps(self) -> str:
        """The "training attack steps" of a sweep's table: ``—`` for a method without training attacks."""
        if not self.train_attacks:
            return "—"
        return str(self.config.attack_steps or "registry default")

    def checkpoint_metadata(self) -> dict[str, Any]:
        """Extra top-level metadata fields (e.g. MID's ``source_checkpoint`` for the transfer protocol)."""
        return {}


TaskFactory = Callable[[TrainConfig, DatasetSpec], DefenseTask]
#: the built-in methods: every module of this package registers its tasks when imported (a new method is one
#: new file here)
METHODS: Catalog[TaskFactory] = Catalog("method", builtin_package="midbench.defenses")


def is_user_method(method: str) -> bool:
    """Whether ``method`` names a user's task (``module:Class``) rather than a registered method."""
    return SPEC_PATTERN.match(method.strip()) is not None


def resolve_method(method: str) -> TaskFactory:
    """The task class of a registered method id, or of a user's ``module:Class``.

    Raises:
        UsageError: unknown id (with suggestions), a module that does not import, or an attribute that is not a
            :class:`DefenseTask` subclass.
    """
    if not is_user_method(method):
        return METHODS.get(method)
    task_class = import_factory(method, option="--method")
    if not (isinstance(task_class, type) and issubclass(task_class, DefenseTask)):
        raise UsageError(f"--method {method}: {getattr(task_class, '__name__', task_class)!r} is not a subclass of "
                         "midbench.defenses.DefenseTask; see 'Your own defense' in the README")
    return task_class


def build_task(config: TrainConfig, dataset: DatasetSpec) -> DefenseTask:
    """Instantiate the task for ``config.method`` (raises UsageError with suggestions if unknown)."""
    task = resolve_method(config.method)(config, dataset)
    if is_user_method(config.method) and not task.name:
        task.name = config.method  # recorded as the checkpoint's method
    return task

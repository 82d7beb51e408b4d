"""Meta Invariance Defense (Zhang et al., "Meta Invariance Defense Towards Generalizable Robustness to Unknown
Adversarial Attacks", TPAMI 2024, arXiv:2404.03340), as described in docs/mid.md.

Two training methods:

- ``mid-teacher`` (stage 1): the teacher autoencoder, ``CE(C(E_t(x)), y) + λ_rec·MSE(D_t(E_t(x)), x)`` on clean
  data;
- ``mid`` (stage 2): the meta-trained student encoder. Its :meth:`~MetaInvarianceDefense.setup` first obtains
  the source model (stage 0, standard training) and the teacher, either from ``--source``/``--teacher``
  checkpoints or by training them in ``<out>/source`` and ``<out>/teacher`` (resumable, reused on rerun), then
  builds the MID classifier ``C∘E_s`` with frozen teacher parts. Each step crafts (or looks up) the Attacker
  Pool's examples and runs :func:`midbench.mid.meta.meta_step`.

The checkpoint is the classifier ``C∘E_s`` plus the frozen E_t and D_t under ``aux.``; its metadata lists the
pool as training attacks and names the source model (``source_checkpoint``) for the transfer protocol.
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from midbench.artifacts.checkpoint import check_compatible, load_checkpoint
from midbench.artifacts.loading import load_classifier, load_teacher
from midbench.artifacts.metadata import ModelMetadata
from midbench.attacks.base import check_target_policy
from midbench.attacks.specs import ResolvedAttack
from midbench.attacks.training import training_registry
from midbench.config import TrainConfig, parse_betas
from midbench.data.batches import DeviceBatches
from midbench.data.datasets import DatasetSpec, TensorSplit
from midbench.defenses.base import METHODS, DefenseTask, SetupContext, epoch_seed
from midbench.defenses.options import check_non_negative, check_positive, option
from midbench.errors import ArtifactError, UsageError
from midbench.mid.losses import ConsistencyWeights
from midbench.mid.meta import MetaSettings, meta_step
from midbench.mid.parts import MidModules, assemble_mid_classifier, attach_decoder, freeze, require_mid_architecture
from midbench.mid.pool import DEFAULT_POOL, AttackerPool, PoolCache, resolve_pool
from midbench.paths import MODEL_FILE

#: the log key of MID's held-out selection score, and the seed offset of the held-out pool's random starts
VALIDATION_KEY = "val_pool_transfer_acc"
#: the log key of the epoch's mean relative inner step ‖θ' − θ‖ / ‖θ‖
INNER_STEP_KEY = "inner_step_relative"
VALIDATION_SEED_OFFSET = 7919

CITATION = "Zhang et al., Meta Invariance Defense Towards Generalizable Robustness to Unknown Adversarial " \
           "Attacks, TPAMI 2024"


@dataclass(frozen=True)
class TeacherOptions:
    """``mid-teacher``'s option."""

    rec_weight: float = option(1.0, "MID teacher: weight λ_rec of the reconstruction loss.")

    def __post_init__(self) -> None:
        check_non_negative(self, "rec_weight")


@dataclass(frozen=True)
class MidOptions:
    """MID's options (docs/mid.md): the pool, the meta step, the consistency weights, and the
    source and teacher stages. Defaults are the paper's; the release's settings are in
    ``results/mnist-mid-release/sweep.toml``."""

    pool: str | None = option(None, "MID: Attacker Pool, a suite name or comma-separated attack ids "
                                    f"(default {DEFAULT_POOL}).")
    attack_source: str = option("source", "MID: the model the pool attacks: source (paper), teacher, or student "
                                           "(online).", choices=("source", "teacher", "student"))
    refresh_every: int = option(1, "MID: regenerate the cached pool examples every N epochs (fixed source).")
    first_order: bool = option(False, "MID: first-order meta-gradient (no second derivatives; faster).")
    no_meta: bool = option(False, "MID ablation: no held-out task and no inner step (plain multi-attack "
                                  "distillation).")
    lc_weight: float = option(1.0, "MID: weight of the label consistency loss.")
    ac_weight: float = option(1.5, "MID: weight of the adversarial consistency loss.")
    cc_weight: float = option(0.8, "MID: weight of the cyclic consistency loss.")
    inner_lr: float = option(1e-4, "MID: step size α of the meta-train inner update.")
    source: str | None = option(None, "MID: reuse this source-model checkpoint (default: train it in OUT/source).",
                                run_reference=True)
    teacher: str | None = option(None, "MID: reuse this teacher checkpoint (default: train it in OUT/teacher).",
                                 run_reference=True)
    source_epochs: int = option(10, "MID: epochs of the source stage.")
    teacher_epochs: int = option(10, "MID: epochs of the teacher stage.")
    source_lr: float | None = option(None, "MID source stage: learning rate (default --lr).")
    teacher_lr: float | None = option(None, "MID teacher stage: learning rate (default --lr; the release's 1e-4).")
    source_batch_size: int | None = option(None, "MID source stage: batch size (default --batch-size).")
    teacher_batch_size: int | None = option(None, "MID teacher stage: batch size (default --batch-size).")
    source_adam_betas: str | None = option(None, "MID source stage: Adam's betas (default --adam-betas).")
    teacher_adam_betas: str | None = option(None, "MID teacher stage: Adam's betas (default --adam-betas; the "
                                                  "release's 0.9,0.99).")
    student_init: str = option("random", "MID: student encoder initialisation, random (paper) or teacher.",
                               choices=("random", "teacher"))
    meta_test_clean: bool = option(False, "MID: the clean task may be drawn as the held-out meta-test task (as "
                                          "in the release).")
    batch_tasks: bool = option(False, "MID: one forward per module for all meta-train tasks (same losses; for "
                                      "GPUs, slower on a CPU; ignored with BatchNorm).")
    pool_target: str | None = option(None, "MID: target policy of the pool's targeted attacks, e.g. fixed:0 (the "
                                           "release's; default: the registry's, random).")
    rec_weight: float = option(1.0, "MID teacher: weight λ_rec of the reconstruction loss.")

    def __post_init__(self) -> None:
        if self.pool is not None and not [name for name in self.pool.split(",") if name.strip()]:
            raise UsageError("--pool is empty; give a suite (e.g. mid-mnist-known) or comma-separated attack ids, "
                             "or leave it out for the default pool")
        if self.refresh_every < 1:
            raise UsageError(f"--refresh-every must be at least 1, got {self.refresh_every}")
        check_non_negative(self, "lc_weight", "ac_weight", "cc_weight", "inner_lr", "rec_weight")
        if not any((self.lc_weight, self.ac_weight, self.cc_weight)):
            raise UsageError("all consistency weights are 0: nothing to train; keep at least one of "
                             "--lc-weight, --ac-weight, --cc-weight above 0")
        check_positive(self, "source_lr", "teacher_lr")
        for name in ("source_epochs", "teacher_epochs", "source_batch_size", "teacher_batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
        for name in ("source_adam_betas", "teacher_adam_betas"):
            if getattr(self, name) is not None:
                parse_betas(getattr(self, name), "--" + name.replace("_", "-"))
        if self.pool_target is not None:
            check_target_policy(self.pool_target)

    def stage(self, role: str) -> tuple[str | None, float | None, int | None, str | None]:
        """The given checkpoint, learning rate, batch size and Adam betas of stage ``role`` (source, teacher)."""
        return (self.source, self.source_lr, self.source_batch_size, self.source_adam_betas) if role == "source" \
            else (self.teacher, self.teacher_lr, self.teacher_batch_size, self.teacher_adam_betas)


@METHODS.register("mid-teacher")
class MidTeacherTraining(DefenseTask):
    """MID stage 1: the teacher autoencoder on clean data, ``CE + λ_rec·MSE`` (Zhang et al. 2024).

    The checkpoint is the teacher classifier ``C∘E_t`` with its decoder under ``aux.decoder``.
    Cost per step: one encoder, head and decoder forward and backward.
    """

    name = "mid-teacher"
    citation = CITATION + " (stage 1: teacher autoencoder)"
    Options = TeacherOptions

    def __init__(self, config: TrainConfig, dataset: DatasetSpec) -> None:
        super().__init__(config, dataset)
        require_mid_architecture(config.arch)

    def setup(self, model: nn.Module, context: SetupContext) -> None:
        attach_decoder(model, self.config.arch, self.dataset.input_shape)

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        feature, context = model.net.encoder(model.normalize(x), return_context=True)
        logits = model.net.head(feature)
        reconstruction = model.aux["decoder"](feature, context)
        loss = nn.functional.cross_entropy(logits, y) + \
            self.options.rec_weight * nn.functional.mse_loss(reconstruction, x)
        return {"loss": loss, "logits": logits}

    def describe(self) -> dict[str, Any]:
        return {"rec_weight": self.options.rec_weight}


@METHODS.register("mid", "meta-invariance-defense")
class MetaInvarianceDefense(DefenseTask):
    """MID stage 2: meta-trained multi-consistency distillation of a student encoder (Zhang et al. 2024).

    Per step: the pool's examples of the batch (cached per epoch block against a fixed source or teacher, or
    crafted online against the student), a held-out adversarial task drawn uniformly, and the meta step.
    """

    name = "mid"
    citation = CITATION
    Options = MidOptions
    transfer_source_option = "source"

    def __init__(self, config: TrainConfig, dataset: DatasetSpec) -> None:
        super().__init__(config, dataset)
        require_mid_architecture(config.arch)
        if config.bf16:
            raise UsageError("--method mid trains in float32 (its second-order meta-gradient is not validated in "
                             "bf16); drop --bf16")
        o = self.options
        self.pool_specs = resolve_pool(config, dataset, o.pool, o.pool_target)
        self.settings = MetaSettings(ConsistencyWeights(o.lc_weight, o.ac_weight, o.cc_weight),
                                     o.inner_lr, o.first_order, meta=not o.no_meta,
                                     clean_can_be_held_out=o.meta_test_clean, batch_tasks=o.batch_tasks)
        self.source_record: str | None = None
        self.teacher_record: str | None = None
        self.modules: MidModules | None = None
        self.cache: PoolCache | None = None
        self.validation_pool: list[tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]] | None = None
        #: this epoch's relative inner steps ‖θ' − θ‖ / ‖θ‖, one per meta step (epoch_metrics)
        self.inner_steps: list[float] = []

    # --- stages 0 and 1 ---------------------------------------------------------------------------------------

    def _stage(self, role: str, method: str, epochs: int, context: SetupContext) -> tuple[Path, str]:
        """The checkpoint of stage ``role``: the given file, or a run in ``<out>/<role>`` (trained or resumed)."""
        given, lr, batch_size, betas = self.options.stage(role)
        if given:
            path = Path(given)  # checked by _check_given before any stage trained
            return path, _record_path(path, context.out_dir)
        return context.train_stage(self.stage_config(role, method, epochs), context.out_dir / role), \
            f"{role}/{MODEL_FILE}"

    def stage_config(self, role: str, method: str, epochs: int) -> TrainConfig:
        """The config of stage ``role``: this run's, with the stage's own epochs, learning rate, batch size and
        betas, without the training attack (the stages train on clean data, so a change of MID's pool settings
        must not invalidate them) and with the teacher's λ_rec as its only option."""
        _, lr, batch_size, betas = self.options.stage(role)
        c, clean = self.config, TrainConfig()
        return replace(c, method=method, epochs=epochs, batch_size=batch_size or c.batch_size, lr=lr or c.lr,
                       adam_betas=betas or c.adam_betas, train_attack=clean.train_attack, eps=clean.eps,
                       attack_steps=clean.attack_steps, attack_step_size=clean.attack_step_size,
                       registry_dirs=clean.registry_dirs,
                       options={"rec_weight": self.options.rec_weight} if method == "mid-teacher" else {})

    def _check_given(self, role: str, given: str) -> None:
        """Refuse a missing, unreadable, tampered-with or other-dataset --source/--teacher file."""
        path = Path(given)
        if not path.is_file():
            raise UsageError(f"--{role} {given}: no such checkpoint; train one or drop --{role} to train it here")
        _check_dataset(load_checkpoint(path).info, self.dataset, self.config.dataset, path)

    def _load_teacher(self, path: Path, device: torch.device) -> nn.Module:
        teacher = load_teacher(path)
        meta = teacher.metadata
        if meta.arch != self.config.arch:
            raise UsageError(f"teacher {path} is a {meta.arch} but --arch is {self.config.arch}; use the "
                             "same architecture")
        _check_dataset(meta, self.dataset, self.config.dataset, path)
        return teacher.model.to(device)

    def setup(self, model: nn.Module, context: SetupContext) -> None:
        # Both given files first: a bad one must be refused before the other stage spends any compute.
        for role, given in (("source", self.options.source), ("teacher", self.options.teacher)):
            if given:
                self._check_given(role, given)
        source_path, self.source_record = self._stage("source", "standard", self.options.source_epochs, context)
        teacher_path, self.teacher_record = self._stage("teacher", "mid-teacher", self.options.teacher_epochs,
                                                        context)
        teacher = self._load_teacher(teacher_path, context.device)
        if self.options.student_init == "teacher":
            model.net.encoder.load_state_dict(teacher.net.encoder.state_dict())
        assemble_mid_classifier(model, teacher)
        self.modules = MidModules.of(model)
        self.pool = AttackerPool(self.pool_specs, self.config.seed, self.config.batch_size,
                                 training_registry(self.config))
        loaded = load_classifier(source_path)
        _check_dataset(loaded.metadata, self.dataset, self.config.dataset, source_path)
        self.source_model = freeze(loaded.model.to(context.device))
        if self.options.attack_source == "student":
            return  # online: crafted against the current MID classifier every step
        self.attacked_model = freeze(teacher) if self.options.attack_source == "teacher" else self.source_model
        self.cache = PoolCache(self.pool, context.train_split, max(self.config.batch_size, 256), context.device,
                               self.options.refresh_every, context.shard)

    # --- stage 2 ----------------------------------------------------------------------------------------------

    def on_epoch_start(self, epoch: int, model: nn.Module) -> None:
        seed = epoch_seed(self.config.seed, epoch)
        self.held_out_generator = torch.Generator().manual_seed(seed + 1)
        self.inner_steps = []
        if self.cache is not None:
            block_start = self.cache.block_of(epoch) * self.options.refresh_every + 1
            self.cache.ensure(epoch, self.attacked_model, epoch_seed(self.config.seed, block_start) + 2)

    def step(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor,
             autocast: AbstractContextManager[Any] | None = None) -> dict[str, torch.Tensor]:
        assert self.modules is not None, "setup() first"
        adversarial = self.cache.lookup(index) if self.cache is not None else self.pool.craft(model, x, y)
        # model.train() (and the attack contract's mode restore) also reach the frozen parts: BatchNorm in the
        # teacher encoder, decoder and head must stay in eval mode so their statistics do not move.
        model.net.head.eval()
        model.aux.eval()
        held_out = None
        if self.settings.meta:
            held_out = self.settings.draw_held_out(1 + len(adversarial), self.held_out_generator)
        result = meta_step(self.modules, [x, *adversarial], y, held_out, self.settings)
        if result.inner_step is not None:
            self.inner_steps.append(result.inner_step)
        return {"loss": result.objective, "logits": result.clean_logits}

    def epoch_metrics(self) -> dict[str, float]:
        """``inner_step_relative``: the epoch's mean ‖θ' − θ‖ / ‖θ‖ of the inner step (absent under ``--no-meta``),
        which says whether an α moves θ at all (an ablation of the meta step is only informative where it does)."""
        if not self.inner_steps:
            return {}
        return {INNER_STEP_KEY: sum(self.inner_steps) / len(self.inner_steps)}

    def validation_metrics(self, model: nn.Module, val_split: TensorSplit, device: torch.device
                           ) -> dict[str, float]:
        """``val_pool_transfer_acc``: the share of held-out examples the MID classifier gets right clean *and*
        under every pool attack crafted on the source model (the paper's transfer protocol; worst case per
        example). The source is fixed, so the pool is crafted once, under its own seed in a forked RNG."""
        if self.validation_pool is None:
            devices = [device] if device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(self.config.seed + VALIDATION_SEED_OFFSET)
                self.validation_pool = [(x, y, self.pool.craft(self.source_model, x, y))
                                        for x, y in DeviceBatches(val_split, 256, device).epoch(shuffle=False)]
        robust = 0
        with torch.no_grad():
            for x, y, adversarial in self.validation_pool:
                correct = model(x).argmax(1) == y
                for x_adv in adversarial:
                    correct &= model(x_adv).argmax(1) == y
                robust += int(correct.sum())
        return {VALIDATION_KEY: robust / len(val_split)}

    def selection_key(self, pgd_key: str) -> str:
        """MID keeps the epoch with the best pool accuracy under transfer: its white-box PGD accuracy is about 0
        in every epoch (MID is not trained against attacks on itself), so choosing by it would be arbitrary."""
        return VALIDATION_KEY

    @property
    def train_attacks(self) -> list[ResolvedAttack]:
        return list(self.pool_specs)

    def describe(self) -> dict[str, Any]:
        c, o = self.config, self.options
        stages = {}
        for role in ("source", "teacher"):
            given, lr, batch, betas = o.stage(role)
            stages[role] = None if given else {"lr": lr or c.lr, "batch_size": batch or c.batch_size,
                                               "adam_betas": betas or c.adam_betas}
        return {"pool": [spec.to_dict() for spec in self.pool_specs], "attack_source": o.attack_source,
                "refresh_every": o.refresh_every, "meta": not o.no_meta, "first_order": o.first_order,
                "weights": {"label": o.lc_weight, "adversarial": o.ac_weight, "cyclic": o.cc_weight},
                "meta_test_weights": vars(self.settings.weights.meta_test()), "inner_lr": o.inner_lr,
                "student_init": o.student_init, "rec_weight": o.rec_weight,
                "meta_test_clean": o.meta_test_clean, "pool_target": o.pool_target,
                "batch_tasks": o.batch_tasks,
                "source_epochs": None if o.source else o.source_epochs,
                "teacher_epochs": None if o.teacher else o.teacher_epochs,
                "stages": stages}

    def summary(self) -> str:
        """What a reader needs to tell MID runs (and ablations) apart."""
        o = self.options
        teacher = f"teacher {o.teacher[1:]}" if o.teacher and o.teacher.startswith("@") else \
            f"teacher {o.teacher_epochs} epochs"
        parts = [teacher, f"student init {o.student_init}"]
        parts.append("no meta step" if o.no_meta else
                     f"{'first' if o.first_order else 'second'}-order, α {o.inner_lr:g}")
        weights = (o.lc_weight, o.ac_weight, o.cc_weight)
        if weights != (1.0, 1.5, 0.8):
            parts.append("weights LC/AC/CC " + "/".join(f"{w:g}" for w in weights))
        if o.meta_test_clean:
            parts.append("clean task may be held out")
        if o.batch_tasks:
            parts.append("tasks batched")
        if o.pool_target:
            parts.append(f"pool target {o.pool_target}")
        parts.append(f"pool refreshed every {o.refresh_every}")
        return ", ".join(parts)

    def checkpoint_metadata(self) -> dict[str, Any]:
        return {"source_checkpoint": self.source_record, "teacher_checkpoint": self.teacher_record}


def _record_path(path: Path, run_dir: Path) -> str:
    """How a given stage checkpoint is recorded: relative to the run directory when it lies beside it (sibling
    runs of a demo or sweep), so the folder can be moved as a whole and the checkpoint's bytes do not depend on
    where it was trained; absolute otherwise."""
    resolved, base = path.resolve(), run_dir.resolve()
    if resolved.is_relative_to(base.parent):
        return os.path.relpath(resolved, base)
    return str(resolved)


def _check_dataset(metadata: ModelMetadata, dataset: DatasetSpec, dataset_name: str, path: Path) -> None:
    try:
        check_compatible(metadata, dataset_name, dataset.num_classes, dataset.input_shape)
    except ArtifactError as error:
        raise ArtifactError(f"{path}: {error}") from error

"""Meta Invariance Defense (Zhang et al., "Meta Invariance Defense Towards Generalizable Robustness to Unknown
Adversarial Attacks", TPAMI 2024, arXiv:2404.03340), as fixed by the design page ``mid.md``.

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
from pathlib import Path
from typing import Any

import torch
from torch import nn

from midbench.attacks.specs import ResolvedAttack
from midbench.checkpoint import check_compatible, load_checkpoint
from midbench.config import TrainConfig
from midbench.data.batches import DeviceBatches
from midbench.data.registry import DatasetSpec, TensorSplit
from midbench.defenses.base import METHODS, DefenseTask, SetupContext, epoch_seed
from midbench.errors import ArtifactError, UsageError
from midbench.loading import load_classifier, load_teacher
from midbench.mid.losses import ConsistencyWeights
from midbench.mid.meta import MetaSettings, meta_step
from midbench.mid.parts import MidModules, assemble_mid_classifier, attach_decoder, freeze, require_mid_architecture
from midbench.mid.pool import AttackerPool, PoolCache, resolve_pool
from midbench.paths import MODEL_FILE
from midbench.training_attacks import training_registry

#: the log key of MID's held-out selection score, and the seed offset of the held-out pool's random starts
VALIDATION_KEY = "val_pool_transfer_acc"
VALIDATION_SEED_OFFSET = 7919

CITATION = "Zhang et al., Meta Invariance Defense Towards Generalizable Robustness to Unknown Adversarial " \
           "Attacks, TPAMI 2024"


@METHODS.register("mid-teacher")
class MidTeacherTraining(DefenseTask):
    """MID stage 1: the teacher autoencoder on clean data, ``CE + λ_rec·MSE`` (Zhang et al. 2024).

    The checkpoint is the teacher classifier ``C∘E_t`` with its decoder under ``aux.decoder``.
    Cost per step: one encoder, head and decoder forward and backward.
    """

    name = "mid-teacher"
    citation = CITATION + " (stage 1: teacher autoencoder)"

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
            self.config.rec_weight * nn.functional.mse_loss(reconstruction, x)
        return {"loss": loss, "logits": logits}

    def describe(self) -> dict[str, Any]:
        return {"rec_weight": self.config.rec_weight}


@METHODS.register("mid", "meta-invariance-defense")
class MetaInvarianceDefense(DefenseTask):
    """MID stage 2: meta-trained multi-consistency distillation of a student encoder (Zhang et al. 2024).

    Per step: the pool's examples of the batch (cached per epoch block against a fixed source or teacher, or
    crafted online against the student), a held-out adversarial task drawn uniformly, and the meta step.
    """

    name = "mid"
    citation = CITATION

    def __init__(self, config: TrainConfig, dataset: DatasetSpec) -> None:
        super().__init__(config, dataset)
        require_mid_architecture(config.arch)
        if config.bf16:
            raise UsageError("--method mid trains in float32 (its second-order meta-gradient is not validated in "
                             "bf16); drop --bf16")
        self.pool_specs = resolve_pool(config, dataset)
        self.settings = MetaSettings(ConsistencyWeights(config.lc_weight, config.ac_weight, config.cc_weight),
                                     config.inner_lr, config.first_order, meta=not config.no_meta,
                                     clean_can_be_held_out=config.meta_test_clean,
                                     batch_tasks=config.batch_tasks)
        if not any((config.lc_weight, config.ac_weight, config.cc_weight)):
            raise UsageError("all consistency weights are 0: nothing to train; keep at least one of "
                             "--lc-weight, --ac-weight, --cc-weight above 0")
        self.source_record: str | None = None
        self.teacher_record: str | None = None
        self.modules: MidModules | None = None
        self.cache: PoolCache | None = None
        self.validation_pool: list[tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]] | None = None

    # --- stages 0 and 1 ---------------------------------------------------------------------------------------

    def _stage(self, role: str, method: str, given: str | None, epochs: int, context: SetupContext
               ) -> tuple[Path, str]:
        """The checkpoint of stage ``role``: the given file, or a run in ``<out>/<role>`` (trained or resumed)."""
        if given:
            path = Path(given)  # checked by _check_given before any stage trained
            return path, _record_path(path, context.out_dir)
        c = self.config
        lr, batch_size, betas = ((c.source_lr, c.source_batch_size, c.source_adam_betas) if role == "source" else
                                 (c.teacher_lr, c.teacher_batch_size, c.teacher_adam_betas))
        stage = TrainConfig(method=method, dataset=c.dataset, arch=c.arch, epochs=epochs,
                            batch_size=batch_size or c.batch_size, optimizer=c.optimizer, lr=lr or c.lr,
                            momentum=c.momentum, weight_decay=c.weight_decay, adam_betas=betas or c.adam_betas,
                            schedule=c.schedule, val_size=c.val_size, val_pgd_steps=c.val_pgd_steps,
                            n_train=c.n_train, seed=c.seed, device=c.device, data_dir=c.data_dir,
                            download=c.download, rec_weight=c.rec_weight)
        return context.train_stage(stage, context.out_dir / role), f"{role}/{MODEL_FILE}"

    def _check_given(self, role: str, given: str) -> None:
        """Refuse a missing, unreadable, tampered-with or other-dataset --source/--teacher file."""
        path = Path(given)
        if not path.is_file():
            raise UsageError(f"--{role} {given}: no such checkpoint; train one or drop --{role} to train it here")
        _check_dataset(load_checkpoint(path).metadata, self.dataset, self.config.dataset, path)

    def _load_teacher(self, path: Path, device: torch.device) -> nn.Module:
        teacher = load_teacher(path)
        meta = teacher.metadata
        if meta.get("arch") != self.config.arch:
            raise UsageError(f"teacher {path} is a {meta.get('arch')} but --arch is {self.config.arch}; use the "
                             "same architecture")
        _check_dataset(meta, self.dataset, self.config.dataset, path)
        return teacher.model.to(device)

    def setup(self, model: nn.Module, context: SetupContext) -> None:
        # Both given files first: a bad one must be refused before the other stage spends any compute.
        for role, given in (("source", self.config.source), ("teacher", self.config.teacher)):
            if given:
                self._check_given(role, given)
        source_path, self.source_record = self._stage("source", "standard", self.config.source,
                                                      self.config.source_epochs, context)
        teacher_path, self.teacher_record = self._stage("teacher", "mid-teacher", self.config.teacher,
                                                        self.config.teacher_epochs, context)
        teacher = self._load_teacher(teacher_path, context.device)
        if self.config.student_init == "teacher":
            model.net.encoder.load_state_dict(teacher.net.encoder.state_dict())
        assemble_mid_classifier(model, teacher)
        self.modules = MidModules.of(model)
        self.pool = AttackerPool(self.pool_specs, self.config.seed, self.config.batch_size,
                                 training_registry(self.config))
        loaded = load_classifier(source_path)
        _check_dataset(loaded.metadata, self.dataset, self.config.dataset, source_path)
        self.source_model = freeze(loaded.model.to(context.device))
        if self.config.attack_source == "student":
            return  # online: crafted against the current MID classifier every step
        self.attacked_model = freeze(teacher) if self.config.attack_source == "teacher" else self.source_model
        self.cache = PoolCache(self.pool, context.train_split, max(self.config.batch_size, 256), context.device,
                               self.config.refresh_every)

    # --- stage 2 ----------------------------------------------------------------------------------------------

    def on_epoch_start(self, epoch: int, model: nn.Module) -> None:
        seed = epoch_seed(self.config.seed, epoch)
        self.held_out_generator = torch.Generator().manual_seed(seed + 1)
        if self.cache is not None:
            block_start = self.cache.block_of(epoch) * self.config.refresh_every + 1
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
        return {"loss": result.objective, "logits": result.clean_logits}

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
        c = self.config
        return {"pool": [spec.to_dict() for spec in self.pool_specs], "attack_source": c.attack_source,
                "refresh_every": c.refresh_every, "meta": not c.no_meta, "first_order": c.first_order,
                "weights": {"label": c.lc_weight, "adversarial": c.ac_weight, "cyclic": c.cc_weight},
                "meta_test_weights": vars(self.settings.weights.meta_test()), "inner_lr": c.inner_lr,
                "student_init": c.student_init, "rec_weight": c.rec_weight,
                "meta_test_clean": c.meta_test_clean, "pool_target": c.pool_target,
                "batch_tasks": c.batch_tasks,
                "source_epochs": None if c.source else c.source_epochs,
                "teacher_epochs": None if c.teacher else c.teacher_epochs,
                "stages": {role: None if given else {"lr": lr or c.lr, "batch_size": batch or c.batch_size,
                                                     "adam_betas": betas or c.adam_betas}
                           for role, given, lr, batch, betas in (
                               ("source", c.source, c.source_lr, c.source_batch_size, c.source_adam_betas),
                               ("teacher", c.teacher, c.teacher_lr, c.teacher_batch_size, c.teacher_adam_betas))}}

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


def _check_dataset(metadata: dict[str, Any], dataset: DatasetSpec, dataset_name: str, path: Path) -> None:
    try:
        check_compatible(metadata, dataset_name, dataset.num_classes, dataset.input_shape)
    except ArtifactError as error:
        raise ArtifactError(f"{path}: {error}") from error

"""The one training loop every method uses: epochs, progress, per-epoch metrics, checkpoints, exact resume.

Output directory (``--out DIR``):

- ``model.safetensors``: the model after the last finished epoch, with full metadata (rewritten every epoch);
- ``best.safetensors``: the model of the epoch with the best held-out score so far (written when it improves;
  only with a held-out slice; ``best_by`` in its metadata names the score): the PGD accuracy, or the method's
  own criterion (:meth:`DefenseTask.selection_key`; MID's is its pool accuracy under transfer);
- ``config.toml``: the resolved configuration;
- ``log.jsonl``: one line of metrics per finished epoch (loss, train accuracy, held-out clean and PGD
  accuracy, learning rate, seconds);
- ``state.pt``: what ``--resume`` needs (model, optimiser and scheduler state, epoch, log), saved with
  ``torch.save`` and read back with ``weights_only=True``.

Exact resume: all randomness of epoch *e* is drawn from generators seeded with (seed, e) — the shuffle from
one, each example's random start and target from its own (seeded with the example's index too) — and the state
is written only at epoch boundaries, atomically. A run killed anywhere
and resumed therefore repeats the interrupted epoch bit for bit and ends with the same weights as an
uninterrupted run on the same machine.

Data-parallel (``torchrun``): every process runs this loop on its slice of each global batch
(:mod:`midbench.runtime.data_parallel` combines the gradients), the held-out evaluation is dealt out by batch, and
rank 0
alone writes; the state records the number of processes, and a resume with another number is refused.

Early stop: a method may end training after an epoch (:meth:`DefenseTask.should_stop`, e.g. fast-at's
catastrophic-overfitting guard). The epoch's log record then carries ``stopped_early`` (``epoch``, ``reason``,
``best_epoch``), and ``model.safetensors`` is replaced by the best epoch's model with ``stopped_early`` in its
metadata. ``--resume`` of a stopped run trains no further; it only completes that replacement if a crash
interrupted it.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from midbench.artifacts.checkpoint import load_checkpoint, save_checkpoint
from midbench.artifacts.metadata import ModelMetadata
from midbench.attacks.gradient import PGD
from midbench.attacks.norms import Norm
from midbench.attacks.randomness import example_seeds, per_example_generators
from midbench.attacks.specs import ResolvedAttack
from midbench.config import TrainConfig, config_to_toml, parse_betas
from midbench.data.batches import DeviceBatches
from midbench.data.datasets import DatasetSpec, TensorSplit, get_dataset, load_split
from midbench.defenses.base import DefenseTask, SetupContext, build_task, epoch_seed, is_user_method
from midbench.defenses.options import as_values, option_defaults
from midbench.errors import ArtifactError, NumericalError, UsageError
from midbench.fileio import atomic_write_text, atomic_write_with, ensure_writable_dir, hold_output, release_output
from midbench.models import build_model
from midbench.paths import BEST_FILE, MODEL_FILE, TRAIN_LOCK_FILE, TRAIN_STATE_FILE
from midbench.runtime.data_parallel import SliceWeights, training_slice
from midbench.runtime.device import configure_for_speed, resolve_device
from midbench.runtime.distributed import SINGLE, Shard, current_shard, rank_device, writes_outputs

LOG_FILE = "log.jsonl"
CONFIG_FILE = "config.toml"

#: called after every batch with (epoch, batch index, batches per epoch, running loss)
BatchCallback = Callable[[int, int, int, float], None]


@dataclass
class TrainResult:
    """Where the run wrote its model and what its last epoch measured."""

    out_dir: Path
    checkpoint: Path
    log: list[dict[str, Any]] = field(default_factory=list)


def split_train_val(data: TensorSplit, val_size: int, n_train: int | None) -> tuple[TensorSplit, TensorSplit]:
    """A fixed held-out slice (a seed-0 permutation's first ``val_size``) and the training rest."""
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))
    val_size = min(val_size, len(data) - 1)
    val_index, train_index = order[:val_size], order[val_size:]
    if n_train is not None:
        train_index = train_index[:n_train]
    return data.subset(train_index), data.subset(val_index)


def build_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """SGD or Adam over the parameters that require gradients (MID freezes its teacher parts)."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "sgd":
        return torch.optim.SGD(trainable, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    return torch.optim.Adam(trainable, lr=config.lr, betas=parse_betas(config.adam_betas),
                            weight_decay=config.weight_decay)


def cyclic_factor(step: int, total: int) -> float:
    """The cyclic schedule's multiple of the maximum rate for optimiser step ``step`` (0-based) of ``total``:
    linear from 0 up to 1 at the middle of training, then down to 0 at the end.

    Wong, Rice & Kolter, "Fast is better than free", ICLR 2020: the rate of a step is read at the fraction of
    training completed after it, (step + 1) / total, so the first step already moves and the last has rate 0.
    """
    progress = (step + 1) / total
    return max(0.0, 1.0 - abs(2.0 * progress - 1.0))


def build_scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int
                    ) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-step schedules: constant; piecewise (×0.1 at 50% and 75% of training, Madry et al./Rice et al.);
    cosine annealing to zero; cyclic (:func:`cyclic_factor`, linear up to ``lr`` at the middle and down to 0)."""
    total = max(1, config.epochs * steps_per_epoch)
    if config.schedule == "cyclic":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: cyclic_factor(step, total))
    if config.schedule == "piecewise":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, [int(total * 0.5), int(total * 0.75)], 0.1)
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, total)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)


#: the log key of the held-out accuracy under the run's own training attack (see :func:`evaluate_slice`)
VAL_TRAIN_ATTACK_KEY = "val_train_attack_acc"


def evaluate_slice(model: nn.Module, data: TensorSplit, dataset: DatasetSpec, steps: int,
                   device: torch.device, batch_size: int = 500, seed: int = 0, shard: Shard = SINGLE,
                   train_attack: ResolvedAttack | None = None) -> dict[str, float]:
    """Clean and PGD-``steps`` (L∞, dataset ε, step 2.5ε/steps) accuracy on a held-out slice, and with
    ``train_attack`` the accuracy under the run's own training attack (``val_train_attack_acc``).

    The last two side by side are the overfitting check of Wong, Rice & Kolter 2020 and Rice et al. 2020: a model
    that resists its training attack (FGSM) on held-out data but not multi-step PGD has overfitted to it
    (catastrophic overfitting); the evaluation flags such a checkpoint (docs/flags.md, ``training-overfitting``).

    Each example's random start comes from its own generator (``seed`` and its index), so under torchrun the
    batches can be dealt to the processes (batch *b* to rank ``b mod K``) and the counts summed, with the
    single process's result."""
    if len(data) == 0:
        return {}
    eps = dataset.eps["Linf"]
    attack = PGD(eps, Norm.LINF, steps=steps, step_size=2.5 * eps / steps)
    own = train_attack.build(seed=seed, batch_size=batch_size) if train_attack is not None else None
    clean = robust = robust_own = 0
    for number, (index, x, y) in enumerate(DeviceBatches(data, batch_size, device).indexed_epoch(shuffle=False)):
        if not shard.owns(number):
            continue
        with torch.no_grad():
            clean += int((model(x).argmax(1) == y).sum())
        with per_example_generators(example_seeds(seed, index.tolist())):
            x_adv = attack(model, x, y)
        robust += int((model(x_adv).argmax(1) == y).sum())
        if own is not None:
            with per_example_generators(example_seeds(seed + 1, index.tolist())):
                x_own = own(model, x, y)
            with torch.no_grad():
                robust_own += int((model(x_own).argmax(1) == y).sum())
    clean, robust, robust_own = shard.all_sum(clean), shard.all_sum(robust), shard.all_sum(robust_own)
    metrics = {"val_clean_acc": clean / len(data), f"val_pgd{steps}_acc": robust / len(data)}
    if own is not None:
        metrics[VAL_TRAIN_ATTACK_KEY] = robust_own / len(data)
    return metrics


def _single_step_training_attack(task: DefenseTask) -> ResolvedAttack | None:
    """The training attack to check on held-out data each epoch: a method's single-step L∞ training attack
    (FGSM and FGSM with a random start, fast-AT's), the one that can overfit catastrophically (Wong et al. 2020).
    Multi-step attacks are what the held-out PGD already measures, so they cost nothing extra."""
    attacks = task.train_attacks
    if len(attacks) != 1 or attacks[0].norm is not Norm.LINF or int(attacks[0].params.get("steps", 1)) != 1:
        return None
    return attacks[0]


def check_slices(n_train: int, batch_size: int, shard: Shard) -> None:
    """Refuse a global batch that cannot give every process at least one example (the last batch included):
    a process without examples has no mean loss to differentiate."""
    if not shard.distributed:
        return
    if min(batch_size, n_train) < shard.world_size:
        raise UsageError(f"--batch-size {batch_size} over {shard.world_size} processes leaves some without "
                         f"examples; use a batch of at least {shard.world_size} or fewer processes")
    last = n_train % batch_size
    if 0 < last < shard.world_size:
        raise UsageError(f"the last batch of each epoch has {last} example(s) ({n_train} training examples, batch "
                         f"{batch_size}), fewer than the {shard.world_size} processes; change --batch-size or "
                         "--n-train by a few")


def prepare_batch_norm(model: nn.Module, shard: Shard, device: torch.device) -> tuple[nn.Module, str | None]:
    """Under torchrun, BatchNorm layers become ``SyncBatchNorm`` (statistics over the global batch) where PyTorch
    supports it (CUDA); on the CPU it does not, and each process normalises with its own slice's statistics
    (the loop then keeps the running statistics equal across processes). Returns the model and what was done:
    None for one process, else "synchronised", "per-process" or "none" (recorded in the checkpoint)."""
    if not shard.distributed:
        return model, None
    if not any(isinstance(module, nn.modules.batchnorm._BatchNorm) for module in model.modules()):
        return model, "none"
    if device.type != "cuda":
        return model, "per-process"
    return nn.SyncBatchNorm.convert_sync_batchnorm(model), "synchronised"


def train(config: TrainConfig, out_dir: str | Path, resume: bool = False, progress: bool = True,
          on_batch: BatchCallback | None = None) -> TrainResult:
    """Train ``config.method`` on ``config.dataset`` and write checkpoints to ``out_dir``.

    One process at a time trains into a folder: it holds ``out_dir/.train.lock`` while it runs (rank 0 for all the
    processes of a torchrun run), and a second one is refused naming the first's pid and host
    (docs/reliability.md, "One writer per output").

    Args:
        resume: continue a run in ``out_dir`` from its last finished epoch (the config must match).
        progress: show a progress bar on the terminal.
        on_batch: optional callback after every batch (tests use it to observe progress).

    Raises:
        UsageError: bad configuration, an existing run without ``resume``, a resume state from another config, or
            another live process training into ``out_dir``.
        ArtifactError: data files missing or incompatible.
        NumericalError: the loss became NaN or Inf (the last good checkpoint is kept).
    """
    config = config.validate()
    out = ensure_writable_dir(out_dir)
    lock = hold_output(out / TRAIN_LOCK_FILE, f"the training run in {out}",
                       "wait for it to finish, or give this one another --out") if writes_outputs() else None
    try:
        return _train(config, out, resume, progress, on_batch)
    finally:
        if lock is not None:
            release_output(lock)


def _train(config: TrainConfig, out: Path, resume: bool, progress: bool, on_batch: BatchCallback | None
           ) -> TrainResult:
    """:func:`train` in the folder it holds."""
    state_path = out / TRAIN_STATE_FILE
    if state_path.exists() and not resume:
        raise UsageError(f"{out} already holds a training run; pass --resume to continue it or choose another --out")

    device = rank_device(resolve_device(config.device))
    shard = current_shard(device)  # under torchrun: this process's slice of every batch
    progress = progress and shard.is_writer
    configure_for_speed(device)
    if config.bf16 and device.type != "cuda":
        raise UsageError("--bf16 needs a CUDA device; drop it to train in float32 on the CPU")
    dataset = get_dataset(config.dataset)
    task = build_task(config, dataset)
    if config.eps_warmup:  # a method without a warm-up refuses here, before its set-up trains anything
        task.scale_attacks(config.attack_scale(1))
    config = config.with_options(as_values(task.options))  # recorded complete: every option at its value
    if resume and not state_path.exists() and (out / MODEL_FILE).exists() \
            and not _interrupted_first_epoch(out / MODEL_FILE, config, option_defaults(task.Options)):
        raise UsageError(f"{out} has a model but no {TRAIN_STATE_FILE} to resume from; choose another --out")
    train_split, val_split = split_train_val(load_split(config.dataset, "train", config.data_dir, config.download),
                                             config.val_size, config.n_train)
    check_slices(len(train_split), config.batch_size, shard)

    torch.manual_seed(config.seed)
    model = build_model(config.arch, dataset.num_classes, dataset.input_shape, dataset.mean, dataset.std).to(device)
    def train_stage(stage: TrainConfig, stage_dir: Path) -> Path:
        return train(stage, stage_dir, resume=True, progress=progress).checkpoint

    task.setup(model, SetupContext(out, train_split, device, progress, train_stage, shard))
    model, batch_norm = prepare_batch_norm(model, shard, device)
    if config.channels_last:  # NHWC weights; the batches follow in _run_epoch (checkpoints are saved contiguous)
        model = model.to(memory_format=torch.channels_last)
    data_parallel = None if batch_norm is None else {"processes": shard.world_size, "batch_norm": batch_norm}
    batches = DeviceBatches(train_split, config.batch_size, device)
    optimizer = build_optimizer(config, model)
    scheduler = build_scheduler(config, optimizer, len(batches))
    start_epoch, log = 1, []
    if resume and state_path.exists():
        start_epoch, log = _restore(state_path, config, option_defaults(task.Options), model, optimizer,
                                    scheduler, device, shard)
        if shard.is_writer:  # a crash between the state and the log write leaves the log short: rewrite it
            atomic_write_text(out / LOG_FILE, "".join(json.dumps(record) + "\n" for record in log))
    if shard.is_writer:
        atomic_write_text(out / CONFIG_FILE, config_to_toml(config.to_dict()))
    if log and "stopped_early" in log[-1]:  # a stopped run stays stopped; finish its model if a crash cut in
        if shard.is_writer:
            _keep_best_model(out, log[-1]["stopped_early"])
        shard.barrier()
        return TrainResult(out, out / MODEL_FILE, log)

    best_key = task.selection_key(f"val_pgd{config.val_pgd_steps}_acc")
    best_value = max((record[best_key] for record in log if best_key in record), default=None)
    for epoch in range(start_epoch, config.epochs + 1):
        record = _run_epoch(epoch, config, task, model, batches, optimizer, scheduler, device, progress, on_batch,
                            shard, sync_buffers=batch_norm == "per-process")
        record.update(task.epoch_metrics())
        model.eval()
        record.update(evaluate_slice(model, val_split, dataset, config.val_pgd_steps, device,
                                     seed=epoch_seed(config.seed, epoch) + 1, shard=shard,
                                     train_attack=_single_step_training_attack(task)))
        if len(val_split):
            record.update(task.validation_metrics(model, val_split, device))
        log.append(record)
        reason = task.should_stop(log)
        if reason is not None:
            record["stopped_early"] = {"epoch": epoch, "reason": reason, "best_epoch": _best_epoch(log, best_key)}
        metadata = replace(_metadata(config, task, dataset, epoch, log, len(train_split)),
                           data_parallel=data_parallel)
        improved = best_key in record and (best_value is None or record[best_key] > best_value)
        if improved:
            best_value = record[best_key]
        if shard.is_writer:  # rank 0 alone writes; every rank holds the same weights and log
            if improved:
                save_checkpoint(out / BEST_FILE, model.state_dict(), replace(metadata, best_by=best_key))
            _save_epoch(out, config, metadata, model, optimizer, scheduler, epoch, log, shard.world_size)
            if reason is not None:
                _keep_best_model(out, record["stopped_early"])
        if reason is not None:
            break
    shard.barrier()  # the files are written before any rank goes on to read them (MID reads its stages')
    return TrainResult(out, out / MODEL_FILE, log)


def _best_epoch(log: list[dict[str, Any]], key: str) -> int | None:
    """The first epoch with the highest ``key`` (None when no record has it)."""
    scored = [record for record in log if key in record]
    return int(max(scored, key=lambda record: record[key])["epoch"]) if scored else None


def _keep_best_model(out: Path, stopped: dict[str, Any]) -> None:
    """After an early stop: ``model.safetensors`` becomes the best epoch's model (the last one when there is no
    ``best.safetensors``), with ``stopped_early`` in its metadata. Idempotent, so a resume can redo it."""
    source = out / BEST_FILE if (out / BEST_FILE).exists() else out / MODEL_FILE
    checkpoint = load_checkpoint(source)
    save_checkpoint(out / MODEL_FILE, checkpoint.state_dict, replace(checkpoint.info, stopped_early=stopped))


def _run_epoch(epoch: int, config: TrainConfig, task: DefenseTask, model: nn.Module, batches: DeviceBatches,
               optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler,
               device: torch.device, progress: bool, on_batch: BatchCallback | None, shard: Shard = SINGLE,
               sync_buffers: bool = False) -> dict[str, Any]:
    """One epoch. Each process takes its slice of every global batch (:class:`SliceWeights`); the random starts
    and targets of the training attacks come from per-example generators seeded with (epoch seed, example
    index), so an example draws the same numbers in whichever slice it lands, and K processes compute the
    single process's step up to the order of floating-point sums."""
    seed = epoch_seed(config.seed, epoch)
    torch.manual_seed(seed)  # anything that still draws from the global stream
    generator = torch.Generator().manual_seed(seed)  # the shuffle
    model.train()
    if config.eps_warmup:
        task.scale_attacks(config.attack_scale(epoch))
    task.on_epoch_start(epoch, model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    started = time.perf_counter()
    total_loss, correct, seen = 0.0, 0.0, 0
    autocast = torch.autocast(device_type="cuda", dtype=torch.bfloat16) if config.bf16 else contextlib.nullcontext()
    with _progress_bar(progress, f"epoch {epoch}/{config.epochs}", len(batches)) as advance:
        for index, (example_index, x, y) in enumerate(batches.indexed_epoch(generator)):
            share = SliceWeights.of(shard, int(y.shape[0]))
            example_index, x, y = share.take(example_index, x, y)
            if config.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            optimizer.zero_grad(set_to_none=True)
            with training_slice(share), per_example_generators(example_seeds(seed, example_index.tolist())):
                outputs = task.step(model, x, y, example_index, autocast)
            share.combine_gradients(trainable)
            batch_loss, batch_correct = share.sum_statistics([
                float(outputs["loss"].detach()) * share.size, float((outputs["logits"].argmax(1) == y).sum())])
            if not math.isfinite(batch_loss):
                raise NumericalError(f"the training loss became {batch_loss / share.global_size} in epoch {epoch}; "
                                     "the last good checkpoint is kept — lower --lr or check the data")
            optimizer.step()
            scheduler.step()
            if sync_buffers:
                _broadcast_buffers(model, shard)
            total_loss += batch_loss
            correct += batch_correct
            seen += share.global_size
            advance(total_loss / seen)
            if on_batch is not None:
                on_batch(epoch, index, len(batches), total_loss / seen)
    seconds = shard.all_max(time.perf_counter() - started)
    return {"epoch": epoch, "loss": total_loss / max(seen, 1), "train_acc": correct / max(seen, 1),
            "lr": optimizer.param_groups[0]["lr"], "seconds": round(seconds, 3)}


def _broadcast_buffers(model: nn.Module, shard: Shard) -> None:
    """Rank 0's floating-point buffers (BatchNorm running statistics) to every rank, as PyTorch's
    DistributedDataParallel does before each forward: the processes' attacks and evaluations then see the same
    model."""
    for buffer in model.buffers():
        if buffer.is_floating_point():
            shard.broadcast_(buffer, 0)


@contextlib.contextmanager
def _progress_bar(enabled: bool, description: str, total: int):  # noqa: ANN202
    if not enabled:
        yield lambda loss: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("loss {task.fields[loss]:.4f}"), TimeRemainingColumn())
    with Progress(*columns, transient=True) as bar:
        task_id = bar.add_task(description, total=total, loss=math.nan)
        yield lambda loss: bar.update(task_id, advance=1, loss=loss)


def _metadata(config: TrainConfig, task: DefenseTask, dataset: DatasetSpec, epoch: int, log: list[dict[str, Any]],
              n_train: int) -> ModelMetadata:
    """The checkpoint metadata of the model after ``epoch`` (a method's own :meth:`checkpoint_metadata` keys
    that the record does not name are kept in its ``extra``)."""
    return ModelMetadata.from_dict({
        "name": f"{task.name if is_user_method(config.method) else config.method}-{config.arch}-{config.dataset}",
        "arch": config.arch, "dataset": config.dataset, "num_classes": dataset.num_classes,
        "input_shape": list(dataset.input_shape), "mean": list(dataset.mean), "std": list(dataset.std),
        "method": task.name, "method_citation": task.citation, "method_params": task.describe(),
        "adversarial_training_baseline": task.adversarial_training_baseline,
        "train_attacks": [attack.to_dict() for attack in task.train_attacks],
        "config": config.to_dict(), "seed": config.seed, "epoch": epoch, "epochs": config.epochs,
        "n_train": n_train, "metrics": log[-1], **task.checkpoint_metadata(),
    })


def _save_epoch(out: Path, config: TrainConfig, metadata: ModelMetadata, model: nn.Module,
                optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler, epoch: int,
                log: list[dict[str, Any]], world_size: int) -> None:
    # Model first, state second: a crash between the two leaves a state one epoch behind the model, and the
    # resume then redoes that epoch and rewrites both — never a state ahead of its model.
    save_checkpoint(out / MODEL_FILE, model.state_dict(), metadata)
    state = {"epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "fingerprint": json.dumps(config.fingerprint(), sort_keys=True),
             "log": json.dumps(log), "world_size": world_size}
    atomic_write_with(out / TRAIN_STATE_FILE, lambda handle: torch.save(state, handle))
    atomic_write_text(out / LOG_FILE, "".join(json.dumps(record) + "\n" for record in log))


def _interrupted_first_epoch(model_path: Path, config: TrainConfig, defaults: dict[str, Any]) -> bool:
    """Whether the model at ``model_path`` is this run's own after epoch 1, left without its state by a crash or a
    full disk between the two writes of :func:`_save_epoch`: the resume then starts again from epoch 1."""
    try:
        metadata = load_checkpoint(model_path).metadata
    except ArtifactError:
        return False
    recorded = metadata.get("config")
    return metadata.get("epoch") == 1 and isinstance(recorded, dict) and config.may_resume(recorded, defaults)


def _restore(state_path: Path, config: TrainConfig, defaults: dict[str, Any], model: nn.Module,
             optimizer: torch.optim.Optimizer,
             scheduler: torch.optim.lr_scheduler.LRScheduler, device: torch.device, shard: Shard = SINGLE
             ) -> tuple[int, list[dict[str, Any]]]:
    try:
        state = torch.load(state_path, map_location=device, weights_only=True)
    except Exception as error:  # noqa: BLE001 - any failure means the state file is unusable
        raise ArtifactError(f"cannot resume: {state_path} is unreadable ({error}); delete it to start over") from error
    try:
        stored = json.loads(state.get("fingerprint") or "null")
    except (TypeError, json.JSONDecodeError):
        stored = None
    if not isinstance(stored, dict) or not config.may_resume(stored, defaults):
        raise UsageError(f"cannot resume: {state_path} was written with a different configuration; use the "
                         "same options (only --epochs and --device may change) or another --out")
    written_by = int(state.get("world_size", 1))
    if written_by != shard.world_size:
        raise UsageError(f"cannot resume: {state_path} was trained by {written_by} process(es) and this run has "
                         f"{shard.world_size}; resume with torchrun --nproc-per-node {written_by} (another count sums "
                         "the gradients in another order), or use another --out")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return int(state["epoch"]) + 1, json.loads(state["log"])

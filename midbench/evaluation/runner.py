"""``run_evaluation``: checkpoint (or ``--model module:factory``) + options → attacks → sanity flags → result files.
The library behind ``midbench eval``."""

from __future__ import annotations

import hashlib
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from midbench.artifacts.checkpoint import check_compatible
from midbench.artifacts.loading import LoadedModel, load_classifier, load_model, recorded_source
from midbench.artifacts.metadata import ModelMetadata
from midbench.artifacts.zoo import DEFAULT_MODEL_DIR, is_zoo_spec, load_zoo_model
from midbench.attacks.plans import colour_only, profile_plan, seen_threat_models, unsized
from midbench.attacks.specs import AttackRegistry, ResolvedAttack, load_registry
from midbench.data.datasets import TensorSplit, get_dataset, load_split
from midbench.errors import UsageError
from midbench.evaluation import sanity
from midbench.evaluation.attacking import BuiltAttacks, ProgressFn
from midbench.evaluation.digests import settings_digest
from midbench.evaluation.documents import ResultDocument, read_result
from midbench.evaluation.engine import Evaluation, evaluate
from midbench.evaluation.eval_config import EvalConfig
from midbench.evaluation.examples import PROFILE_EXAMPLES, profile_examples
from midbench.evaluation.results import (
    build_result,
    finished_result,
    indices_sha256,
    make_run_id,
    software_versions,
    utc_now,
    write_result,
)
from midbench.evaluation.selection import check_profile_options, select_attacks, with_defaults
from midbench.evaluation.state import EvalState, state_path, states_of_other_world_sizes
from midbench.fileio import ensure_writable_dir, safe_file_name
from midbench.paths import TRANSFER_CACHE_DIR
from midbench.protocols import PROTOCOLS
from midbench.runtime.device import resolve_device
from midbench.runtime.distributed import Shard, current_shard, rank_device


@dataclass
class EvalRun:
    """What :func:`run_evaluation` produced."""

    #: the result document and its file; None on the ranks other than 0 of a sharded evaluation (rank 0 writes)
    result: ResultDocument | None
    path: Path | None
    #: the matrices; None when a finished result was reused (``EvalConfig.reuse_finished``)
    evaluation: Evaluation | None
    notes: list[str]


def run_evaluation(config: EvalConfig, progress: ProgressFn | None = None, *, model: LoadedModel | None = None,
                   data: TensorSplit | None = None, source: LoadedModel | None = None) -> EvalRun:
    """Evaluate a checkpoint (or a ``--model``) as configured, run the sanity checks, write its result files.

    Everything that can be refused (names, ε, shapes, the results directory) is checked before any attack.
    The sanity flags (:mod:`midbench.evaluation.sanity`) go into ``result["flags"]``; they never change a number.

    Args:
        model: a model already loaded (the Python API's ``nn.Module``), in place of the config's checkpoint.
        data: examples already in memory (the Python API's tensors) in place of the dataset's test split; the
            config's ``dataset`` still fixes ε and the input shape. The result records the split as ``tensors``
            and the SHA-256 of their content as ``indices_sha256``, so they never share a row with a test split.
        source: under transfer, a source model already loaded, in place of the config's ``source``.
    """
    if config.protocol not in PROTOCOLS:
        raise UsageError(f"unknown protocol {config.protocol!r}; use {' or '.join(PROTOCOLS)}")
    if config.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {config.batch_size}")
    if config.n_examples is not None and config.n_examples < 1:
        raise UsageError(f"--n-examples must be at least 1, got {config.n_examples}")
    device = rank_device(resolve_device(config.device))
    shard = current_shard(device)  # under torchrun: this process's share of the batches
    zoo_source = is_zoo_spec(config.source)
    # --model-dir may name the folder of a zoo source alone; the model's loader then must not see it
    model_dir = config.model_dir if is_zoo_spec(config.model_spec) or not zoo_source else None
    loaded = model if model is not None else load_model(
        config.checkpoint, arch=config.arch, dataset=config.dataset, model_spec=config.model_spec,
        weights=config.weights, device=device, seed=config.seed, zoo_threat_model=config.zoo_threat_model,
        model_dir=model_dir, download=config.download, normalize=config.normalize, output=config.output)
    meta = loaded.metadata
    dataset_name = config.dataset or meta.dataset
    if dataset_name is None:
        raise UsageError(f"{config.checkpoint} records no dataset; pass --dataset")
    spec = get_dataset(dataset_name)
    check_compatible(meta, dataset_name, spec.num_classes, spec.input_shape)
    train_attacks = [ResolvedAttack.from_dict(item) for item in meta.train_attacks]
    registry = load_registry([Path(d) for d in config.registry_dirs])
    attacks = select_attacks(config.selection, registry, spec.eps, train_attacks)
    data_eps = {**spec.eps, **config.selection.eps}
    channels = spec.input_shape[0]
    grey_data = [attack.id for attack, _ in attacks if channels != 3 and attack.needs_colour]
    if grey_data:
        raise UsageError(f"attack(s) {', '.join(grey_data)} need colour images, and {dataset_name} has {channels} "
                         "channel(s); leave them out")
    check_profile_options(config.selection)
    profiled = with_defaults(config.selection).unknown
    suites = config.selection.profile_suites
    profile = (profile_plan(registry, data_eps, seen_threat_models(train_attacks, registry), suite=suites,
                            dataset=dataset_name, only=config.selection.threat_models, channels=channels)
               if profiled else [])
    # threat models the profile leaves out (on grey data, or without an ε on this dataset), recorded in the result;
    # none when --threat-models chose what to climb (profile_plan refuses those it would leave out)
    climbs_all = profiled and not config.selection.threat_models
    skipped = [{"id": model, "reason": f"needs colour images; {dataset_name} has {channels} channel(s)"}
               for model in (colour_only(registry, suites) if climbs_all and channels != 3 else [])]
    skipped += [{"id": model, "reason": f"needs an {norm} ε, which {dataset_name} does not define (--eps sets one)"}
                for model, norm in (unsized(registry, data_eps, suites) if climbs_all else {}).items()]
    linf_eps = data_eps.get("Linf")
    if (config.check_eps or config.check_steps) and linf_eps is None:
        raise UsageError(f"--check-eps/--check-steps sweep PGD-L∞, but {dataset_name} has no L∞ ε; pass --eps")

    source_model, source_info = _transfer_source(config, meta, dataset_name, source)

    # refuse a bad parameter or a missing backend before any attack runs; the evaluation then uses these builds
    built = BuiltAttacks([a for a, _ in attacks] + [a for plan in profile for rung in plan.rungs for a in rung.attacks],
                         config.seed, config.batch_size)
    ensure_writable_dir(Path(config.results_dir))
    split = "test" if data is None else "tensors"
    if data is None:  # a streamed dataset (ImageNet, a folder) decodes only the examples evaluated
        data = load_split(dataset_name, "test", config.data_dir, config.download, limit=config.n_examples)
    data, notes = _first_examples(data, config, shard)
    count = len(data)
    indices = np.arange(count)

    name = config.name or meta.name or Path(str(config.checkpoint)).stem
    indices_hash = indices_sha256(indices) if split == "test" else content_sha256(data)
    fingerprint = {"checkpoint_sha256": loaded.sha256, "source_sha256": (source_info or {}).get("sha256"),
                   "protocol": config.protocol, "dataset": dataset_name, "indices_sha256": indices_hash,
                   "eps": data_eps, "attacks": [[a.key, split, a.equivalence()] for a, split in attacks],
                   "profile": [[plan.threat_model.id, rung.strength, [a.equivalence() for a in rung.attacks]]
                               for plan in profile for rung in plan.rungs],
                   "seed": config.seed, "batch_size": config.batch_size, "device": device.type,
                   "versions": software_versions()}
    # what else decides the result file beyond the resumable state's fingerprint: the sanity sweeps and the suites
    digest = settings_digest({**fingerprint, "check_eps": config.check_eps, "check_steps": config.check_steps,
                              "profile_suites": list(suites)})
    if config.reuse_finished and not shard.distributed:
        earlier = finished_result(config.results_dir, dataset_name, name, config.protocol, digest)
        if earlier is not None:
            return EvalRun(read_result(earlier), earlier, None, [*notes, f"finished earlier with the same settings: "
                                                                        f"{earlier}"])
    # one model evaluated through two named sources (a sweep's extra transfer sources) is two evaluations
    state_key = (f"{config.protocol}@{safe_file_name(config.source_name)}" if source_info and config.source_name
                 else config.protocol)
    _refuse_other_world_sizes(config, dataset_name, name, state_key, shard)
    state = EvalState.open(state_path(config.results_dir, dataset_name, name, state_key, shard), fingerprint,
                           restart=config.restart, discard_other_settings=config.discard_other_settings)
    if state.resumed:
        finished = sum(1 for progress_record in state.attacks.values() if progress_record.finished)
        notes.append(f"resuming an interrupted evaluation ({finished} of {len(attacks)} attacks finished) from "
                     f"{state.path}")
    try:
        evaluation = evaluate(loaded.model, data, attacks, device=device, protocol=config.protocol,
                              source_model=source_model, batch_size=config.batch_size, seed=config.seed,
                              progress=progress, state=state, profile=profile, shard=shard,
                              cache_dir=transfer_cache_dir(config) if source_info else None,
                              source_sha256=(source_info or {}).get("sha256"), built=built)
        flags, sanity_info = _sanity_checks(config, loaded.model, data, evaluation, registry, data_eps, device,
                                            progress, meta.metrics)
        if not shard.is_writer:  # rank 0 writes the one result file
            state.finish()
            return EvalRun(None, None, evaluation, notes)
        created = utc_now()
        run_id = make_run_id(name, config.protocol, created)
        data_info = {"dataset": dataset_name, "split": split, "n_examples": count,
                     "indices_sha256": indices_hash, "eps": data_eps}
        protocol_info = {"name": config.protocol, "source": source_info,
                         **({"transfer_cache": evaluation.transfer_cache.as_dict()}
                            if evaluation.transfer_cache is not None else {})}
        result = build_result(evaluation, run_id=run_id, created=created,
                              checkpoint=_checkpoint_record(loaded, name, train_attacks, config),
                              data=data_info, protocol=protocol_info, seed=config.seed, device=str(device),
                              flags=flags, sanity=sanity_info, command=command_line(), profile_skipped=skipped,
                              profile_suites=suites, settings_sha256=digest)
        # what each threat model's attack does to a few test images, crafted on the model the protocol attacks
        shown = data.subset(torch.arange(min(PROFILE_EXAMPLES, count)))
        examples = profile_examples(source_model if source_model is not None else loaded.model,
                                    shown.as_float().to(device), shown.labels.to(device), profile, config.seed)
        path = write_result(result, evaluation, config.results_dir, indices, examples)
    except BaseException:
        state.finish(keep=True)  # interrupted or failed: what is finished stays resumable
        raise
    state.finish()
    return EvalRun(result, path, evaluation, notes)


def _transfer_source(config: EvalConfig, meta: ModelMetadata, dataset_name: str, loaded: LoadedModel | None
                     ) -> tuple[nn.Module | None, dict[str, Any] | None]:
    """Under transfer: the model the attacks are crafted on (``loaded``, or the config's ``source``) and its record
    in the result (path, hash, name, zoo entry); nothing under white-box.

    Raises:
        UsageError: no source under transfer, a source under white-box, or a source of another dataset's shape.
    """
    if config.protocol != "transfer":
        if config.source or loaded is not None:
            raise UsageError("--source only applies to --protocol transfer")
        return None, None
    zoo_source = is_zoo_spec(config.source)
    source_path = config.source or (None if loaded is not None else recorded_source(meta, config.checkpoint))
    if not source_path and loaded is None:
        raise UsageError("--protocol transfer needs --source CHECKPOINT (the model the attacks are crafted on)")
    if loaded is not None:
        source = loaded
    else:
        source = load_zoo_source(config, dataset_name) if zoo_source else load_classifier(source_path)
    spec = get_dataset(dataset_name)
    check_compatible(source.metadata, dataset_name, spec.num_classes, spec.input_shape)
    path = source.path if zoo_source or loaded is not None else source_path
    info = {"path": None if path is None else str(path), "sha256": source.sha256,
            "name": config.source_name or source.metadata.name,
            **({"zoo": source.metadata.extra["zoo"]} if zoo_source else {})}
    return source.model, info


def content_sha256(data: TensorSplit) -> str:
    """SHA-256 of examples passed in memory (their images' shape and bytes, then their labels): what identifies
    them in a result, where a test split is identified by its indices."""
    digest = hashlib.sha256(repr(tuple(data.images.shape)).encode())
    digest.update(data.images.contiguous().cpu().numpy().tobytes())
    digest.update(data.labels.to(torch.int64).contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()


def _first_examples(data: TensorSplit, config: EvalConfig, shard: Shard) -> tuple[TensorSplit, list[str]]:
    """The first ``--n-examples`` of the test split (all of it when it has fewer, with a note saying so).

    Raises:
        UsageError: more processes than examples.
    """
    notes, count = [], len(data)
    if config.n_examples is not None and config.n_examples > count:
        notes.append(f"--n-examples {config.n_examples} is larger than the test split; using all {count}")
    elif config.n_examples is not None:
        count = config.n_examples
    if shard.world_size > count:
        raise UsageError(f"{shard.world_size} processes for {count} examples: each process needs at least one; use "
                         f"at most {count} (--nproc)")
    return data.subset(torch.arange(count)), notes


def _checkpoint_record(loaded: LoadedModel, name: str, train_attacks: list[ResolvedAttack], config: EvalConfig
                       ) -> dict[str, Any]:
    """The result's record of the evaluated model: file, hash, name, what trained it, how it was loaded."""
    meta = loaded.metadata
    record = {"path": loaded.path, "sha256": loaded.sha256, "name": name, "method": meta.method, "arch": meta.arch,
              "dataset": meta.dataset, "train_attacks": [attack.key for attack in train_attacks],
              "adversarial_training_baseline": meta.adversarial_training_baseline}
    if config.model_spec:
        record.update({"model_spec": meta.model_spec, "weights_sha256": meta.weights_sha256,
                       "source_sha256": meta.source_sha256})
    if "zoo" in meta.extra:  # a RobustBench entry: its name, dataset, threat model and architecture
        record["zoo"] = meta.extra["zoo"]
    if "adapters" in meta.extra:  # what was put around the model: normalisation, the output read
        record["adapters"] = meta.extra["adapters"]
    return record


def transfer_cache_dir(config: EvalConfig) -> Path | None:
    """The transfer cache's folder of ``config`` (None: no cache)."""
    if not config.transfer_cache:
        return None
    if config.transfer_cache_dir:
        return Path(config.transfer_cache_dir)
    return Path(config.results_dir) / TRANSFER_CACHE_DIR


def load_zoo_source(config: EvalConfig, dataset: str) -> LoadedModel:
    """A RobustBench zoo entry as the transfer source (``--source robustbench:NAME``, e.g. ``Standard``, the
    undefended model the MID paper's protocol crafts on): from ``source_zoo_threat_model``'s list, its weights under
    ``source_model_dir`` (default ``model_dir``, then RobustBench's ``./models``)."""
    assert config.source is not None
    folder = config.source_model_dir or config.model_dir or DEFAULT_MODEL_DIR
    zoo = load_zoo_model(config.source, dataset, config.source_zoo_threat_model, folder, config.download)
    return LoadedModel(zoo.model, zoo.metadata, zoo.sha256, zoo.path)


def command_line() -> str | None:
    """This process's command line as ``midbench ...`` when it was started as midbench (the console script,
    ``python -m midbench`` or torchrun's ``-m midbench``), else None (an evaluation run from Python)."""
    program = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if program is None or not (program.name == "midbench" or program.parent.name == "midbench"):
        return None
    return shlex.join(["midbench", *sys.argv[1:]])


def _refuse_other_world_sizes(config: EvalConfig, dataset: str, name: str, state_key: str, shard: Shard) -> None:
    """An interrupted evaluation left by another number of processes is resumed only by that number (its batches
    were dealt otherwise); ``--restart`` discards it.

    Raises:
        UsageError: such a state exists and ``--restart`` was not given.
    """
    others = states_of_other_world_sizes(config.results_dir, dataset, name, state_key, shard)
    if not others:
        return
    if config.restart:
        shard.barrier()  # every rank has looked before rank 0 removes anything
        if shard.is_writer:
            for path in (path for paths in others.values() for path in paths):
                path.unlink(missing_ok=True)
        return
    world = max(others)
    how = "a single process" if world == 1 else f"{world} processes (--nproc {world})"
    raise UsageError(f"an interrupted evaluation of {name} ({config.protocol}) with {how} is in "
                     f"{Path(config.results_dir)}; resume it with {how}, or pass --restart to start over")


def _sanity_checks(config: EvalConfig, model: nn.Module, data: TensorSplit, evaluation: Evaluation,
                   registry: AttackRegistry, data_eps: dict[str, float], device: torch.device,
                   progress: ProgressFn | None, metrics: dict[str, Any] | None = None
                   ) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """The flags of :mod:`midbench.evaluation.sanity` and what they were computed from.

    The model probes and the ε/steps sweeps concern the evaluated model itself, so they are white-box under
    either protocol; the Square comparison uses the evaluation's own matrix (white-box protocol only). They run
    after the attacks, on the first clean-correct examples, never change a number, and leave the RNG as it was.
    """
    flags: list[dict[str, str]] = []
    info: dict[str, Any] = {}
    if not len(data):
        return flags, info
    probed = data.subset(torch.from_numpy(sanity.first_correct(evaluation.clean_correct, sanity.PROBE_EXAMPLES)))
    probe, info["probes"] = sanity.probe_flags(model, probed.as_float().to(device), probed.labels.to(device))
    flags += probe
    flags += sanity.square_flags(evaluation)
    flags += sanity.overfitting_flags(evaluation)
    flags += sanity.training_flags(metrics)
    gradient_free, info["gradient_free"] = sanity.gradient_free_flags(model, data, evaluation, registry, data_eps,
                                                                      device, config.seed, config.batch_size)
    flags += gradient_free
    if not info["gradient_free"]:
        del info["gradient_free"]
    linf_eps = data_eps.get("Linf")
    if (config.check_eps or config.check_steps) and linf_eps is not None:
        subset = data.subset(torch.from_numpy(sanity.first_correct(evaluation.clean_correct,
                                                                   sanity.SWEEP_EXAMPLES)))
        base = registry.get(sanity.SWEEP_ATTACK)
        # (asked for, strength key in the result, sweep, flag code, strength name in the message)
        sweeps = ((config.check_eps, "eps", sanity.eps_sweep, "accuracy-rises-with-eps", "ε"),
                  (config.check_steps, "steps", sanity.steps_sweep, "accuracy-rises-with-steps", "steps"))
        for enabled, key, sweep, code, what in sweeps:
            if not enabled:
                continue
            if progress is not None:
                progress(f"sanity check: {key} sweep", 0, len(subset))
            points = sweep(model, subset, base, linf_eps, device=device, seed=config.seed,
                           batch_size=config.batch_size)
            info[f"{key}_sweep"] = {"attack": sanity.SWEEP_ATTACK, "n_examples": len(subset),
                                    "points": [{key: value, "robust_accuracy": accuracy} for value, accuracy in points]}
            flags += sanity.rise_flags(points, len(subset), code, what)
    return sanity.sort_flags(flags), info

"""The cells of a sweep as steps to run: a training run's config with its references resolved, an evaluation's
config and what must match for a recorded result to stand, a transfer source's crafting step, and the hashes
that identify models in the state file. The serial, parallel and Slurm drivers (:mod:`midbench.bench.sweep`,
:mod:`midbench.bench.submitted`) all build their steps here, so each runs the same step with the same seeds."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from midbench.bench.plan import evaluation_key
from midbench.bench.state import registry_digest
from midbench.bench.sweep_file import Sweep, SweepModel, SweepRun, run_references
from midbench.config import TrainConfig
from midbench.fileio import ensure_writable_dir
from midbench.paths import TRANSFER_CACHE_DIR

#: where a crafting step's evaluation of the source leaves its result (its product is the transfer cache)
CRAFTING_DIR = "transfer-crafting"


def model_path(out: Path, run: str) -> Path:
    """The final model file of sweep run ``run`` under the sweep folder ``out``."""
    from midbench.training.loop import MODEL_FILE

    return out / run / MODEL_FILE


def resolved_config(run: SweepRun, out: Path) -> TrainConfig:
    """The run's config with references to other runs replaced by their model files."""
    paths = {option: str(model_path(out, other)) for option, other in run_references(run.config).items()}
    return run.config.with_options({**run.config.options, **paths})


def shared_settings(sweep: Sweep) -> dict[str, Any]:
    """What every evaluation of the sweep shares; a change of it redoes the evaluations."""
    from midbench.evaluation.results import software_versions

    return {"n_examples": sweep.n_examples, "batch_size": sweep.eval_batch_size, "seed": sweep.seed,
            "selection": repr(sweep.selection), "device": sweep.device, "versions": software_versions(),
            "registry": registry_digest()}


@dataclass
class EvaluationJob:
    """One evaluation of the plan: its key in the state file, what must match for a recorded result to stand,
    and the evaluation's config."""

    key: str
    #: the evaluated model's hash; None for a zoo entry whose weights are yet to be downloaded (hashed afterwards)
    sha256: str | None
    settings: dict[str, Any]
    config: Any  # EvalConfig
    model: SweepModel | None = None
    dataset: str = ""

    @classmethod
    def of(cls, sweep: Sweep, step: tuple[str, str, str | None], out: Path, results: Path,
           hashes: dict[str, str | None], shared: dict[str, Any], restart: bool, device: str | None = None
           ) -> EvaluationJob:
        from midbench.evaluation.eval_config import EvalConfig

        name, protocol, source_run = step
        model = sweep.model(name)
        # a transfer row depends on the source model too: a retrained source makes it stale; an evaluate-only
        # model's row depends on how it is named (zoo entry, threat model, factory) as well as on its files
        settings = {**shared, "source_sha256": hashes[source_run] if source_run else None,
                    **({"model": model.describe()} if model else {})}
        extra = source_run is not None and source_run != sweep.transfer_source
        key = evaluation_key(sweep, step)
        if model is None:
            loaded = {"checkpoint": str(model_path(out, name))}
        else:
            loaded = {"checkpoint": model.checkpoint, "arch": model.arch, "model_spec": model.model,
                      "weights": model.weights, "zoo_threat_model": model.zoo_threat_model,
                      "model_dir": model.model_dir, "dataset": sweep.dataset, "normalize": model.normalize,
                      "output": model.output}
        config = EvalConfig(
            **loaded, **(source_options(sweep, out, source_run) if source_run else {}), selection=sweep.selection,
            protocol=protocol,
            # the extra sources are named by run, so their tables stay apart from the main source's
            source_name=source_run if extra else None,
            n_examples=sweep.n_examples, batch_size=sweep.eval_batch_size, results_dir=str(results), name=name,
            seed=sweep.seed, device=device or sweep.device, restart=restart, data_dir=sweep.data_dir,
            download=sweep.download,
            # one cache for the sweep, beside its runs (not in a results folder that may be committed)
            transfer_cache_dir=str(out / TRANSFER_CACHE_DIR))
        return cls(key, hashes[name], settings, config, model, sweep.dataset)

    def already_done(self, state: dict[str, Any], results: Path, say: Callable[[str], None]) -> bool:
        """Whether the state records this evaluation of this very model; a stale result is deleted, so that it
        does not share the table with the new one."""
        done = state["evaluations"].get(self.key)
        if done and self.sha256 is not None and done["checkpoint_sha256"] == self.sha256 and \
                done["settings"] == self.settings and (results / done["result"]).exists():
            say(f"[bench] {self.key}: already evaluated ({done['result']})")
            return True
        if done:
            for suffix in (".json", ".npz"):
                (results / done["result"]).with_suffix(suffix).unlink(missing_ok=True)
        return False

    def record(self, state: dict[str, Any], result_path: Path, seconds: float, results: Path) -> None:
        # a zoo entry downloaded by its evaluation is hashed now that its file is there
        sha = self.sha256 if self.sha256 is not None or self.model is None else files_sha(self.model, self.dataset)
        state["evaluations"][self.key] = {"checkpoint_sha256": sha, "settings": self.settings,
                                          "result": str(result_path.relative_to(results)),
                                          "seconds": round(seconds, 1)}


def source_options(sweep: Sweep, out: Path, name: str) -> dict[str, Any]:
    """The EvalConfig options naming a transfer source: a run's model file, an evaluate-only model's checkpoint,
    or a zoo entry with its threat model list and weights folder."""
    model = sweep.model(name)
    if model is None:
        return {"source": str(model_path(out, name))}
    if model.is_zoo:
        return {"source": model.model, "source_zoo_threat_model": model.zoo_threat_model,
                "source_model_dir": model.model_dir}
    assert model.checkpoint is not None  # load_sweep admits checkpoints and zoo entries only as sources
    return {"source": model.checkpoint}


def model_sha(sweep: Sweep, out: Path, name: str) -> str | None:
    """What identifies the model ``name`` in the state file: a trained run's checkpoint hash, or the hash of an
    evaluate-only model's files (None while a zoo entry's weights are not downloaded)."""
    model = sweep.model(name)
    return checkpoint_sha(model_path(out, name)) if model is None else files_sha(model, sweep.dataset)


def files_sha(model: SweepModel, dataset: str) -> str | None:
    """SHA-256 over an evaluate-only model's description and the bytes of its files (a factory's module file
    among them, so an edited factory is evaluated again); None when one is missing."""
    from midbench.artifacts.usermodel import module_source_sha256

    digest = hashlib.sha256(model.describe().encode())
    if model.model is not None and not model.is_zoo:
        digest.update((module_source_sha256(model.model) or "").encode())
    for path in model.files(dataset):
        if not path.is_file():
            return None
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def craft_job(sweep: Sweep, source: str, out: Path, hashes: dict[str, str | None], shared: dict[str, Any],
               device: str) -> EvaluationJob:
    """The crafting step of a transfer source: the source evaluated through itself under transfer, with the
    sweep's selection and the sweep's transfer cache. Under transfer every attack crafted on the source crafts
    every example, whatever model is evaluated, so this fills the cache with what each transfer evaluation of the
    sweep reads (all but the known attacks of models trained otherwise than the source, which their evaluations
    craft). Its result file goes to ``<out>/transfer-crafting`` and into no table."""
    job = EvaluationJob.of(sweep, (source, "transfer", source), out, out / CRAFTING_DIR, hashes, shared,
                            restart=False, device=device)
    job.config = replace(job.config, name=f"craft-{source}", reuse_finished=True, discard_other_settings=True)
    ensure_writable_dir(out / CRAFTING_DIR)
    return job


def checkpoint_sha(path: Path) -> str:
    from midbench.artifacts.checkpoint import load_checkpoint

    return load_checkpoint(path).sha256

"""The options of one evaluation run (``midbench eval``, a sweep's evaluations, the demo's)."""

from __future__ import annotations

from dataclasses import dataclass, field

from midbench.evaluation.options import RUN_DEFAULT
from midbench.evaluation.selection import AttackSelection


@dataclass(frozen=True)
class EvalConfig:
    """Options of one evaluation run (``midbench eval``); the defaults of the options a user sets are declared in
    :data:`midbench.evaluation.options.RUN_OPTIONS` with their help text.

    Exactly one of ``checkpoint`` and ``model_spec`` names the model. ``model_spec`` (``module:factory``, see
    :mod:`midbench.artifacts.usermodel`) needs ``dataset`` and takes optional ``weights``.
    ``check_eps``/``check_steps`` run
    the opt-in sanity sweeps of :mod:`midbench.evaluation.sanity` after the attacks.
    """

    checkpoint: str | None = RUN_DEFAULT["checkpoint"]
    dataset: str | None = None
    arch: str | None = RUN_DEFAULT["arch"]
    selection: AttackSelection = field(default_factory=AttackSelection)
    protocol: str = "whitebox"
    source: str | None = None
    #: how tables name the transfer source (default: the name in its checkpoint); a sweep with two sources of
    #: the same method names them by run, so their tables stay apart
    source_name: str | None = None
    n_examples: int | None = RUN_DEFAULT["n_examples"]
    batch_size: int = RUN_DEFAULT["batch_size"]
    results_dir: str = RUN_DEFAULT["results_dir"]
    name: str | None = RUN_DEFAULT["name"]
    seed: int = RUN_DEFAULT["seed"]
    device: str = "auto"
    registry_dirs: tuple[str, ...] = ()
    data_dir: str | None = RUN_DEFAULT["data_dir"]
    download: bool = RUN_DEFAULT["download"]
    model_spec: str | None = RUN_DEFAULT["model"]
    #: the adapters put around the evaluated model (midbench.artifacts.adapters); not around a transfer source
    normalize: str | None = RUN_DEFAULT["normalize"]
    output: str | None = RUN_DEFAULT["output"]
    weights: str | None = RUN_DEFAULT["weights"]
    #: with ``model_spec`` ``robustbench:NAME``: the zoo's threat model and its local weights folder (also the
    #: folder of a zoo ``source``, unless ``source_model_dir`` names another)
    zoo_threat_model: str = RUN_DEFAULT["zoo_threat_model"]
    model_dir: str | None = RUN_DEFAULT["model_dir"]
    #: with ``source`` ``robustbench:NAME``: the zoo list the source is taken from and its weights folder
    source_zoo_threat_model: str = "Linf"
    source_model_dir: str | None = None
    check_eps: bool = RUN_DEFAULT["check_eps"]
    check_steps: bool = RUN_DEFAULT["check_steps"]
    #: discard the resumable state of an interrupted evaluation (``--restart``) instead of resuming or refusing it
    restart: bool = RUN_DEFAULT["restart"]
    #: discard such a state only when its settings differ (resume it otherwise) instead of refusing it: for
    #: callers that own their evaluations (``midbench calibrate`` measuring its references)
    discard_other_settings: bool = False
    #: under ``transfer``: keep the adversarial images crafted on the source in the transfer cache and reuse them
    #: (midbench.evaluation.transfer_cache); the numbers are the same either way
    transfer_cache: bool = RUN_DEFAULT["transfer_cache"]
    #: the transfer cache's folder (default: ``<results_dir>/transfer-cache``)
    transfer_cache_dir: str | None = RUN_DEFAULT["transfer_cache_dir"]
    #: return the newest finished result of the same evaluation (same settings digest, e.g. a demo run again)
    #: instead of evaluating again; one process only
    reuse_finished: bool = False

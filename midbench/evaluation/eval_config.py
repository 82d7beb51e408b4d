"""The options of one evaluation run (``midbench eval``, a sweep's evaluations, the demo's)."""

from __future__ import annotations

from dataclasses import dataclass, field

from midbench.evaluation.selection import AttackSelection
from midbench.paths import DEFAULT_RESULTS_DIR


@dataclass(frozen=True)
class EvalConfig:
    """Options of one evaluation run (``midbench eval``).

    Exactly one of ``checkpoint`` and ``model_spec`` names the model. ``model_spec`` (``module:factory``, see
    :mod:`midbench.artifacts.usermodel`) needs ``dataset`` and takes optional ``weights``.
    ``check_eps``/``check_steps`` run
    the opt-in sanity sweeps of :mod:`midbench.evaluation.sanity` after the attacks.
    """

    checkpoint: str | None = None
    dataset: str | None = None
    arch: str | None = None
    selection: AttackSelection = field(default_factory=AttackSelection)
    protocol: str = "whitebox"
    source: str | None = None
    #: how tables name the transfer source (default: the name in its checkpoint); a sweep with two sources of
    #: the same method names them by run, so their tables stay apart
    source_name: str | None = None
    n_examples: int | None = None
    batch_size: int = 256
    results_dir: str = str(DEFAULT_RESULTS_DIR)
    name: str | None = None
    seed: int = 0
    device: str = "auto"
    registry_dirs: tuple[str, ...] = ()
    data_dir: str | None = None
    download: bool = False
    model_spec: str | None = None
    weights: str | None = None
    #: with ``model_spec`` ``robustbench:NAME``: the zoo's threat model and its local weights folder (also the
    #: folder of a zoo ``source``, unless ``source_model_dir`` names another)
    zoo_threat_model: str = "Linf"
    model_dir: str | None = None
    #: with ``source`` ``robustbench:NAME``: the zoo list the source is taken from and its weights folder
    source_zoo_threat_model: str = "Linf"
    source_model_dir: str | None = None
    check_eps: bool = False
    check_steps: bool = False
    #: discard the resumable state of an interrupted evaluation (``--restart``) instead of resuming or refusing it
    restart: bool = False
    #: discard such a state only when its settings differ (resume it otherwise) instead of refusing it: for
    #: callers that own their evaluations (``midbench calibrate`` measuring its references)
    discard_other_settings: bool = False
    #: under ``transfer``: keep the adversarial images crafted on the source in the transfer cache and reuse them
    #: (midbench.evaluation.transfer_cache); the numbers are the same either way
    transfer_cache: bool = True
    #: the transfer cache's folder (default: ``<results_dir>/transfer-cache``)
    transfer_cache_dir: str | None = None
    #: return the newest finished result of the same evaluation (same settings digest, e.g. a demo run again)
    #: instead of evaluating again; one process only
    reuse_finished: bool = False

"""Attack configurations as data: the TOML files of ``attacks_registry/``.

An entry names an attack implementation and fixes its hyper-parameters; ε and step sizes may be written
relative to the dataset's ε (``"eps"``, ``"0.5*eps"``, ``"eps/30"``, ``"2.5*eps/40"``), so one entry serves
MNIST and CIFAR. Resolving an entry against a dataset gives a :class:`ResolvedAttack` with plain numbers; that
is what checkpoints record as training attacks and what decides known versus unknown (equality by
specification, not by name).

Format of a registry file::

    [[attack]]
    id = "pgd-linf"              # kebab-case <algorithm>-<norm>[-t]
    version = 1                  # bump when a hyper-parameter changes; results record id@version
    family = "linf"              # threat family: linf, l2, l1, l0, spatial, frequency, corruption, noise, ensemble
    norm = "Linf"                # Linf, L2, L1, or omitted for non-Lp threats
    implementation = "midbench.attacks.gradient:PGD"   # or "autoattack:standard", "torchattacks:JSMA"
    eps = "eps"                  # the dataset's ε for this norm (default), a number, or a multiple of it
    target = "random"            # only for targeted entries: random, least-likely, fixed:K
    citation = "Madry et al., ICLR 2018"
    params = { steps = 40, step_size = "eps/30", random_start = true }
    passes = { forward = "steps", backward = "steps" }   # per example: an integer or e.g. "steps*search_steps+1"
    threat_model = "linf"        # a [[threat_model]] id (default: linf/l2/l1/noise from the family)
    budget = ["eps"]             # the parameters a strength scales (default ["eps"] when there is a norm)

    [[attack]]
    id = "pgd-linf-long"
    extends = "pgd-linf"         # every key of that entry (passes too), its params merged with these; id,
    version = 1                  #   version and description are this entry's own
    description = "PGD-200"
    params = { steps = 200 }     # give passes = {..} as well when the algorithm changes, not only its values

    [[suite]]
    name = "smoke"
    description = "..."
    attacks = ["fgsm-linf", "pgd-linf"]

``[[threat_model]]`` tables declare threat models and their strength ladders (:mod:`midbench.attacks.threat_models`).
"""

from __future__ import annotations

import importlib
import inspect
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from midbench._toml import tomllib
from midbench.attacks.norms import Norm, parse_norm
from midbench.attacks.syntax import ID_PATTERN, RELATIVE
from midbench.attacks.threat_models import Ladder, ThreatModel, check_budget, parse_ladder, parse_threat_model
from midbench.catalog import suggest
from midbench.errors import UsageError

FAMILIES = ("linf", "l2", "l1", "l0", "spatial", "frequency", "corruption", "noise", "ensemble")
ATTACK_KEYS = {"id", "version", "family", "norm", "implementation", "eps", "target", "citation", "params",
               "passes", "description", "threat_model", "budget", "extends"}
#: the keys an entry that ``extends`` another must give itself (the rest it inherits)
EXTENSION_KEYS = {"id", "version", "extends", "description"}
#: the threat model of an entry that names none, by family (other families must name theirs to have one)
DEFAULT_THREAT_MODEL = {"linf": "linf", "l2": "l2", "l1": "l1", "noise": "noise"}
REQUIRED_KEYS = {"id", "version", "family", "implementation", "citation"}
SUITE_KEYS = {"name", "description", "attacks"}
#: the file of a reference set's folder that holds its calibrated ladders (``midbench calibrate``)
LADDER_FILE = "ladders.toml"


def evaluate_passes(expression: int | str, params: dict[str, Any]) -> int:
    """Evaluate a pass-count expression: an integer, or a sum of products of integer parameters and integers
    (``"steps"``, ``"steps+1"``, ``"steps*search_steps"``, ``"angle_steps*shift_steps*shift_steps"``).

    Raises:
        KeyError: an unknown parameter name. ValueError: anything else that is not of that form.
    """
    if isinstance(expression, int) and not isinstance(expression, bool):
        return expression
    total = 0
    for term in str(expression).split("+"):
        product = 1
        for factor in term.split("*"):
            factor = factor.strip()
            if factor.isdigit():
                product *= int(factor)
            elif isinstance(params[factor], int) and not isinstance(params[factor], bool):
                product *= params[factor]
            else:
                raise ValueError(f"{factor} is not an integer parameter")
        total += product
    return total


#: a nominal ε per norm used to check that every entry can be built when the registry loads
CHECK_EPS = {"Linf": 0.3, "L2": 2.0, "L1": 10.0}


def resolve_relative(value: Any, eps: float) -> Any:
    """Turn ``"k*eps/d"`` strings into numbers; other values pass through."""
    if isinstance(value, str):
        match = RELATIVE.match(value)
        if match:
            scale = float(match["scale"]) if match["scale"] else 1.0
            divisor = float(match["divisor"]) if match["divisor"] else 1.0
            return scale * eps / divisor
    return value


@dataclass(frozen=True)
class ResolvedAttack:
    """An attack configuration with every number fixed for one dataset."""

    id: str
    version: int
    family: str
    norm: Norm | None
    implementation: str
    eps: float
    target: str | None
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """``id@version``, the name results use; version 0 marks a custom (overridden) configuration."""
        return f"{self.id}@{self.version if self.version else 'custom'}"

    @property
    def targeted(self) -> bool:
        return self.target is not None

    def equivalence(self) -> str:
        """What makes two attacks "the same attack" (docs/evaluation.md): family, norm, target policy, ε and
        hyper-parameters, with floats rounded to 6 significant digits so 8/255 equals 0.0313725."""
        def canon(value: Any) -> Any:
            if isinstance(value, float):
                return float(f"{value:.6g}")
            if isinstance(value, dict):
                return {k: canon(v) for k, v in sorted(value.items())}
            if isinstance(value, list | tuple):
                return [canon(v) for v in value]
            return value

        return json.dumps([self.implementation, self.family, self.norm.value if self.norm else None,
                           self.target, canon(self.eps), canon(self.params)], sort_keys=True)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "version": self.version, "family": self.family,
                "norm": self.norm.value if self.norm else None, "implementation": self.implementation,
                "eps": self.eps, "target": self.target, "params": dict(self.params)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ResolvedAttack:
        return cls(id=data["id"], version=int(data["version"]), family=data["family"],
                   norm=parse_norm(data["norm"]) if data.get("norm") else None,
                   implementation=data["implementation"], eps=float(data["eps"]), target=data.get("target"),
                   params=dict(data.get("params") or {}))

    @property
    def uses_gradients(self) -> bool:
        """Whether the implementation follows the model's input gradient (:attr:`Attack.uses_gradients`)."""
        attack_class, preset = load_implementation(self.implementation)
        return bool(attack_class.gradient_based(preset))

    @property
    def needs_colour(self) -> bool:
        """Whether the implementation only applies to colour images (:func:`needs_colour`)."""
        return needs_colour(self.implementation)

    def build(self, seed: int = 0, batch_size: int = 256) -> Any:
        """Instantiate the attack object (an :class:`midbench.attacks.base.Attack`)."""
        attack_class, preset = load_implementation(self.implementation)
        accepted = inspect.signature(attack_class.__init__).parameters
        kwargs: dict[str, Any] = {"eps": self.eps, "norm": self.norm, **preset, **self.params}
        if self.target is not None:
            kwargs["target"] = self.target
        if "seed" in accepted:
            kwargs["seed"] = seed
        if "batch_size" in accepted:
            kwargs["batch_size"] = batch_size
        try:
            return attack_class(**kwargs)
        except TypeError as error:
            raise UsageError(f"attack {self.key}: bad parameters for {self.implementation} ({error})") from error


@dataclass(frozen=True)
class AttackSpec:
    """One registry entry as written (ε and parameters possibly relative to the dataset's ε)."""

    id: str
    version: int
    family: str
    norm: Norm | None
    implementation: str
    eps: float | str
    target: str | None
    citation: str
    params: dict[str, Any]
    passes: dict[str, int | str]
    description: str
    source: str
    #: the ``[[threat_model]]`` this entry belongs to, and the parameters a ladder strength scales
    threat_model: str | None = None
    budget: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.id}@{self.version}"

    def resolve(self, dataset_eps: dict[str, float], eps_override: float | None = None) -> ResolvedAttack:
        """Fix ε (the dataset's for this norm unless overridden) and every relative parameter.

        Raises:
            UsageError: the entry is sized by a norm's ε that the dataset does not declare (a folder dataset's
                ``dataset.toml`` may leave norms out; docs/datasets.md).
        """
        norm = self.norm.value if self.norm else "Linf"
        base = eps_override if eps_override is not None else dataset_eps.get(norm)
        if base is None:
            relative = [value for value in (self.eps, *self.params.values())
                        if isinstance(value, str) and RELATIVE.match(value)]
            if relative:
                raise UsageError(f"attack {self.id} is sized by the dataset's {norm} ε, which this dataset does not "
                                 f"declare; set eps.{norm} in its dataset.toml, or pick attacks of a declared norm")
            base = 0.0  # nothing in the entry refers to it
        eps = resolve_relative(self.eps, base)
        if not isinstance(eps, float | int):
            raise UsageError(f"attack {self.id}: ε {self.eps!r} is neither a number nor a multiple of eps")
        params = {name: resolve_relative(value, float(eps)) for name, value in self.params.items()}
        return ResolvedAttack(self.id, self.version, self.family, self.norm, self.implementation, float(eps),
                              self.target, params)

    def passes_per_example(self) -> dict[str, int]:
        """Forward/backward passes per example, with parameter names replaced by their values."""
        return {kind: evaluate_passes(value, self.params) for kind, value in self.passes.items()}


@dataclass
class AttackRegistry:
    """All attack entries and suites, from the shipped directory plus any ``--registry-dir``."""

    attacks: dict[str, AttackSpec] = field(default_factory=dict)
    suites: dict[str, list[str]] = field(default_factory=dict)
    suite_descriptions: dict[str, str] = field(default_factory=dict)
    suite_sources: dict[str, str] = field(default_factory=dict)
    threat_models: dict[str, ThreatModel] = field(default_factory=dict)
    #: calibrated ladders by (threat model, dataset); a later registry folder's ladder replaces an earlier one's
    ladders: dict[tuple[str, str], Ladder] = field(default_factory=dict)

    def get(self, attack_id: str) -> AttackSpec:
        """The entry with ``attack_id`` (``id`` or ``id@version``)."""
        bare, _, version = attack_id.partition("@")
        if bare not in self.attacks:
            raise UsageError(suggest(bare, list(self.attacks), "attack"))
        spec = self.attacks[bare]
        if version and version != str(spec.version):
            raise UsageError(f"attack {bare} is at version {spec.version} in this registry, not {version}")
        return spec

    def suite(self, name: str) -> list[AttackSpec]:
        """The entries of suite ``name``, in order."""
        if name not in self.suites:
            raise UsageError(suggest(name, list(self.suites), "suite"))
        return [self.get(attack_id) for attack_id in self.suites[name]]


def load_registry(extra_dirs: list[Path] | None = None) -> AttackRegistry:
    """Load the shipped registry, the calibrated ladders of the shipped reference sets, then each of
    ``extra_dirs`` (whose ids must not clash; their ladders replace shipped ones for the same threat model and
    dataset).

    Raises:
        UsageError: a one-line message naming the file and entry of the first problem found.
    """
    from midbench.paths import shipped_reference_dirs, shipped_registry_dir

    registry = AttackRegistry()
    files: list[Path] = []
    for directory in [shipped_registry_dir(), *(extra_dirs or [])]:
        directory = Path(directory)
        if not directory.is_dir():
            raise UsageError(f"registry directory {directory} does not exist")
        files += sorted(directory.glob("*.toml"))
        if directory == shipped_registry_dir():
            files += [folder / LADDER_FILE for folder in shipped_reference_dirs() if (folder / LADDER_FILE).is_file()]
    seen: set[Path] = set()
    raw: dict[str, dict[str, Any]] = {}
    extensions: list[tuple[dict[str, Any], str, Path]] = []
    for path in files:
        if path.resolve() not in seen:  # a reference folder also named with --registry-dir is read once
            seen.add(path.resolve())
            _load_file(path, registry, raw, extensions)
    for entry, where, path in extensions:  # after every file: a base may live in any of them
        _add_attack(registry, _extended(entry, raw, where), where, path)
    for spec in registry.attacks.values():
        if spec.threat_model is not None and spec.threat_model not in registry.threat_models:
            raise UsageError(f"{spec.source}: attack {spec.id!r} names an "
                             + suggest(spec.threat_model, list(registry.threat_models), "threat model"))
    for ladder in registry.ladders.values():
        if ladder.threat_model not in registry.threat_models:
            raise UsageError(f"{ladder.source}: a [[ladder]] names an "
                             + suggest(ladder.threat_model, list(registry.threat_models), "threat model"))
    for name, ids in registry.suites.items():
        for attack_id in ids:
            if attack_id.partition("@")[0] not in registry.attacks:
                raise UsageError(f"{registry.suite_sources[name]}: suite {name!r} names an "
                                 + suggest(attack_id, list(registry.attacks), "attack"))
    return registry


def _load_file(path: Path, registry: AttackRegistry, raw: dict[str, dict[str, Any]],
               extensions: list[tuple[dict[str, Any], str, Path]]) -> None:
    """Add ``path``'s tables to ``registry``; its plain attack entries also go to ``raw`` (by id) and the entries
    that extend another to ``extensions``, which :func:`load_registry` resolves once every file is read."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise UsageError(f"{path}: not valid TOML ({error})") from error
    if "calibrate" in document:
        return  # a calibration file (`midbench calibrate`) kept in its reference set's folder, not registry data
    unknown_tables = set(document) - {"attack", "suite", "threat_model", "ladder"}
    if unknown_tables:
        raise UsageError(f"{path}: unknown table(s) {sorted(unknown_tables)}; use [[attack]], [[suite]], "
                         "[[threat_model]] and [[ladder]]")
    for table, value in document.items():
        if not isinstance(value, list) or not all(isinstance(entry, dict) for entry in value):
            raise UsageError(f"{path}: {table} must be an array of tables, written [[{table}]]")
    for index, entry in enumerate(document.get("ladder", [])):
        ladder = parse_ladder(entry, f"{path} [[ladder]] #{index + 1} ({entry.get('threat_model', '?')})", str(path))
        for dataset in ladder.datasets:
            registry.ladders[(ladder.threat_model, dataset)] = ladder
    for index, entry in enumerate(document.get("threat_model", [])):
        model = parse_threat_model(entry, f"{path} [[threat_model]] #{index + 1} ({entry.get('id', '?')})", str(path))
        if model.id in registry.threat_models:
            raise UsageError(f"{path}: duplicate threat model id {model.id!r} "
                             f"(also in {registry.threat_models[model.id].source})")
        registry.threat_models[model.id] = model
    for index, entry in enumerate(document.get("attack", [])):
        where = f"{path} [[attack]] #{index + 1} ({entry.get('id', '?')})"
        if "extends" in entry:
            extensions.append((entry, where, path))
            continue
        _add_attack(registry, entry, where, path)
        raw[str(entry["id"])] = entry
    for index, suite in enumerate(document.get("suite", [])):
        where = f"{path} [[suite]] #{index + 1} ({suite.get('name', '?')})"
        extra = set(suite) - SUITE_KEYS
        if extra or not isinstance(suite.get("name"), str) or not isinstance(suite.get("attacks"), list):
            raise UsageError(f"{where}: a suite needs name (a string) and attacks (a list) only; unknown keys "
                             f"{sorted(extra)}")
        if suite["name"] in registry.suites:
            raise UsageError(f"{where}: duplicate suite name {suite['name']!r}")
        registry.suites[suite["name"]] = [str(a) for a in suite["attacks"]]
        registry.suite_descriptions[suite["name"]] = str(suite.get("description", ""))
        registry.suite_sources[suite["name"]] = str(path)


def _add_attack(registry: AttackRegistry, entry: dict[str, Any], where: str, path: Path) -> None:
    spec = _parse_attack(entry, where, str(path))
    if spec.id in registry.attacks:
        raise UsageError(f"{path}: duplicate attack id {spec.id!r} (also in {registry.attacks[spec.id].source})")
    registry.attacks[spec.id] = spec


def _extended(entry: dict[str, Any], raw: dict[str, dict[str, Any]], where: str) -> dict[str, Any]:
    """The full entry of one that ``extends`` another: the base's keys, then the entry's, params merged key by
    key. The base's passes formula is inherited unless the entry gives its own: a formula over params (``steps``)
    stays right when their values change, but not when the algorithm does (another optimizer)."""
    missing = EXTENSION_KEYS - set(entry)
    if missing:
        raise UsageError(f"{where}: an entry that extends another needs {sorted(missing)} too")
    base = raw.get(str(entry["extends"]))
    if base is None:
        raise UsageError(f"{where}: extends an unknown attack, or one that itself extends another: "
                         + suggest(str(entry["extends"]), list(raw), "attack"))
    if not isinstance(entry.get("params", {}), dict):
        raise UsageError(f"{where}: params must be a table")
    merged = {key: value for key, value in base.items() if key not in ("id", "version", "description")}
    merged.update({key: value for key, value in entry.items() if key != "extends"})
    merged["params"] = {**base.get("params", {}), **entry.get("params", {})}
    return merged


def _parse_attack(entry: dict[str, Any], where: str, source: str) -> AttackSpec:
    extra = set(entry) - ATTACK_KEYS
    if extra:
        raise UsageError(f"{where}: unknown key(s) {sorted(extra)}; allowed: {', '.join(sorted(ATTACK_KEYS))}")
    missing = REQUIRED_KEYS - set(entry)
    if missing:
        raise UsageError(f"{where}: missing key(s) {sorted(missing)}")
    if not ID_PATTERN.match(str(entry["id"])):
        raise UsageError(f"{where}: id must be kebab-case like pgd-linf, got {entry['id']!r}")
    if not isinstance(entry["version"], int) or entry["version"] < 1:
        raise UsageError(f"{where}: version must be a positive integer")
    if not isinstance(entry["family"], str) or entry["family"] not in FAMILIES:
        raise UsageError(f"{where}: family {entry['family']!r} is not one of {', '.join(FAMILIES)}")
    try:
        norm = parse_norm(entry["norm"]) if "norm" in entry else None
    except ValueError as error:
        raise UsageError(f"{where}: {error}") from error
    params = entry.get("params", {})
    if not isinstance(params, dict):
        raise UsageError(f"{where}: params must be a table")
    passes = entry.get("passes", {})
    if not isinstance(passes, dict):
        raise UsageError(f"{where}: passes must be a table, like {{ forward = \"steps+1\", backward = \"steps\" }}")
    eps = entry.get("eps", "eps")
    for name, value in [("eps", eps), *params.items()]:
        if isinstance(value, str) and "eps" in value:
            match = RELATIVE.match(value)
            if not match or (match["divisor"] is not None and float(match["divisor"]) == 0):
                raise UsageError(f"{where}: {name} must be a number or a non-negative multiple of eps like "
                                 f"'0.5*eps' or 'eps/30', got {value!r}")
    if isinstance(eps, str) and not RELATIVE.match(eps):
        raise UsageError(f"{where}: eps must be a number or a multiple of eps like '0.5*eps', got {eps!r}")
    if isinstance(eps, int | float) and (eps < 0 or not math.isfinite(eps)):
        raise UsageError(f"{where}: eps must be a non-negative number")
    for kind, value in passes.items():
        try:
            if kind not in ("forward", "backward"):
                raise ValueError(kind)
            evaluate_passes(value, {name: 1 for name in params})
        except (ValueError, KeyError, TypeError) as error:
            raise UsageError(f"{where}: passes.{kind} must be an integer or a sum of products of integer "
                             f"parameters and integers, like 'steps*search_steps+1' ({error})") from error
    target = entry.get("target")
    if target is not None:
        from midbench.attacks.base import check_target_policy

        try:
            check_target_policy(str(target))
        except UsageError as error:
            raise UsageError(f"{where}: {error}") from error
    try:
        accepted = accepted_parameters(str(entry["implementation"]))
    except UsageError as error:
        raise UsageError(f"{where}: {error}") from error
    unknown_params = set(params) - accepted if accepted is not None else set()
    if unknown_params:
        raise UsageError(f"{where}: {entry['implementation']} takes no parameter(s) {sorted(unknown_params)}")
    threat_model = entry.get("threat_model", DEFAULT_THREAT_MODEL.get(entry["family"]))
    if threat_model is not None and not isinstance(threat_model, str):
        raise UsageError(f"{where}: threat_model must be the id of a [[threat_model]], got {threat_model!r}")
    spec = AttackSpec(id=entry["id"], version=entry["version"], family=entry["family"], norm=norm,
                      implementation=str(entry["implementation"]), eps=eps, target=target,
                      citation=str(entry["citation"]), params=dict(params), passes=dict(passes),
                      description=str(entry.get("description", "")), source=source, threat_model=threat_model,
                      budget=check_budget(entry, params, norm, where))
    if not spec.implementation.startswith("torchattacks:"):  # the optional backend is checked when it runs
        try:  # constructors validate values (steps ≥ 1, ...): refuse a bad entry now, naming it
            spec.resolve(CHECK_EPS).build()
        except UsageError as error:
            raise UsageError(f"{where}: {error}") from error
    return spec


def needs_colour(implementation: str) -> bool:
    """Whether the attack ``implementation`` only applies to colour (3-channel) images
    (:attr:`midbench.attacks.latent.LatentAttack.NEEDS_COLOUR`: hue, saturation). Such an attack is refused on
    grey data and its threat model is left out of the profile there (docs/unforeseen.md)."""
    attack_class, _ = load_implementation(implementation)
    return bool(getattr(attack_class, "NEEDS_COLOUR", False))


def load_implementation(target: str) -> tuple[type, dict[str, Any]]:
    """Resolve an implementation target to (Attack subclass, preset keyword arguments).

    Accepted forms: ``midbench.attacks.<module>:<Class>``; ``autoattack:standard`` or ``autoattack:<component>``
    (apgd-ce, apgd-t, fab-t, square) for the reference AutoAttack code; ``torchattacks:<Class>`` for the
    optional torchattacks backend. Nothing else can be imported: a registry file cannot make midbench run
    arbitrary code (docs/reliability.md, "Security").
    """
    from midbench.attacks.base import Attack

    prefix, _, name = target.partition(":")
    if prefix == "autoattack":
        from midbench.attacks.autoattack import STANDARD_COMPONENTS, AutoAttackStandard

        if name == "standard":
            return AutoAttackStandard, {}
        if name in STANDARD_COMPONENTS:
            return AutoAttackStandard, {"components": (name,)}
        raise UsageError(f"unknown implementation {target!r}; use autoattack:standard or autoattack:<component> "
                         f"with a component of {', '.join(STANDARD_COMPONENTS)}")
    if prefix == "torchattacks":
        from midbench.attacks.torchattacks_adapter import TorchattacksAttack

        if not name.isidentifier():
            raise UsageError(f"implementation {target!r} must name a torchattacks class, e.g. torchattacks:JSMA")
        return TorchattacksAttack, {"name": name}
    if not prefix.startswith("midbench.attacks.") or not name:
        raise UsageError(f"implementation {target!r} must be 'midbench.attacks.<module>:<Class>', "
                         "'autoattack:<standard|component>' or 'torchattacks:<Class>'")
    try:
        module = importlib.import_module(prefix)
    except ImportError as error:
        raise UsageError(f"implementation module {prefix!r} cannot be imported ({error})") from error
    attack_class = getattr(module, name, None)
    if not (inspect.isclass(attack_class) and issubclass(attack_class, Attack)):
        raise UsageError(f"implementation {target!r} is not an Attack class")
    return attack_class, {}


def accepted_parameters(target: str) -> set[str] | None:
    """The hyper-parameter names an implementation takes, or ``None`` when they cannot be known here
    (a torchattacks class while the extra is not installed)."""
    attack_class, preset = load_implementation(target)
    if hasattr(attack_class, "accepted_parameters"):
        return attack_class.accepted_parameters(**preset)
    names = set(inspect.signature(attack_class.__init__).parameters) - {"self", "eps", "norm", "target"}
    return names - set(preset)

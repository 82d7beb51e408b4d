"""Fuzzing midbench's readers (docs/reliability.md, "Fuzzed readers").

Property, for every reader: an input either loads, or is refused with one of midbench's own errors of exit 2
(``UsageError``) or 3 (``ArtifactError``). Never another exception (which the command line would show as an
internal error), never a hang, never a file written beside the input.

The inputs are drawn by hypothesis (property-based testing): mutations of a valid file of each kind (a TOML line
deleted, duplicated, or its value replaced by a value of any TOML type; JSON values replaced; bytes flipped,
truncated or appended) as well as wholly random text and bytes. hypothesis was chosen over a coverage-guided fuzzer
(atheris, libFuzzer) because it needs no instrumented build, draws structured inputs (a valid document with one
value of the wrong type reaches far deeper than random bytes), and shrinks a failure to its smallest form. Runs are
derandomised, so CI draws the same inputs every time; ``MIDBENCH_FUZZ_EXAMPLES`` raises the count per reader (the
figures in docs/reliability.md come from runs with 500 or 1,000). Inputs that once failed are pinned below with
``@example``.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from midbench.errors import ArtifactError, UsageError

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = int(os.environ.get("MIDBENCH_FUZZ_EXAMPLES", "60"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# ---- inputs --------------------------------------------------------------------------------------------------

toml_scalars = st.one_of(
    st.integers(min_value=-(2 ** 63), max_value=2 ** 63 - 1).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),  # repr gives TOML's own inf and nan
    st.text(max_size=12).map(json.dumps),
    st.sampled_from(["true", "false", "1979-05-27", "[]", "{}", '""', "-0", "0.0", "1e400"]))
toml_values = st.recursive(toml_scalars, lambda inner: st.lists(inner, max_size=4).map(
    lambda items: "[" + ", ".join(items) + "]"), max_leaves=6)


@st.composite
def toml_mutations(draw: st.DrawFn, text: str) -> str:
    """A valid TOML document with a few of its lines deleted, duplicated, or given a value of another type."""
    lines = text.splitlines()
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        if not lines:
            break
        index = draw(st.integers(min_value=0, max_value=len(lines) - 1))
        action = draw(st.sampled_from(["value", "value", "value", "delete", "duplicate", "garbage"]))
        line = lines[index]
        if action == "value" and "=" in line and not line.lstrip().startswith("#"):
            lines[index] = line.split("=", 1)[0] + "= " + draw(toml_values)
        elif action == "delete":
            del lines[index]
        elif action == "duplicate":
            lines.insert(index, line)
        elif action == "garbage":
            lines[index] = draw(st.text(max_size=20))
    return "\n".join(lines) + "\n"


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=8)


@st.composite
def json_mutations(draw: st.DrawFn, document: Any) -> str:
    """A valid JSON document with a few of its values (at any depth) replaced by values of any type, or removed."""
    document = json.loads(json.dumps(document))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        paths = list(_json_paths(document))
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = document
        for key in path[:-1]:
            parent = parent[key]
        if isinstance(parent, dict) and draw(st.booleans()):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(json_values)
    return json.dumps(document)


def _json_paths(value: Any, prefix: tuple[Any, ...] = ()) -> Any:
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        yield (*prefix, key)
        yield from _json_paths(child, (*prefix, key))


@st.composite
def byte_mutations(draw: st.DrawFn, data: bytes) -> bytes:
    """A valid file truncated, with bytes flipped, or with bytes appended."""
    action = draw(st.sampled_from(["truncate", "flip", "append", "random"]))
    if action == "truncate":
        return data[:draw(st.integers(min_value=0, max_value=max(0, len(data) - 1)))]
    if action == "append":
        return data + draw(st.binary(min_size=1, max_size=64))
    if action == "random":
        return draw(st.binary(max_size=512))
    mutable = bytearray(data)
    for _ in range(draw(st.integers(min_value=1, max_value=8))):
        position = draw(st.integers(min_value=0, max_value=len(mutable) - 1))
        mutable[position] ^= draw(st.integers(min_value=1, max_value=255))
    return bytes(mutable)


def holds_the_property(read: Callable[[Path], Any], path: Path) -> None:
    """``read(path)`` loads or raises UsageError/ArtifactError, and writes nothing beside ``path``."""
    before = sorted(path.parent.iterdir())
    try:
        read(path)
    except (UsageError, ArtifactError) as error:
        assert str(error).strip() and "\n" not in str(error).strip().splitlines()[0]
    after = sorted(path.parent.iterdir())
    assert after == before, f"{read.__name__} wrote {set(after) - set(before)}"


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def _taken(path: Path) -> bytes:
    """The bytes of a valid file just written to seed the mutations; the file itself is removed."""
    data = path.read_bytes()
    path.unlink()
    return data


def _write(folder: Path, name: str, content: str | bytes) -> Path:
    path = folder / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8", errors="surrogatepass")
    return path


# ---- TOML readers --------------------------------------------------------------------------------------------

SWEEP = (REPO / "results" / "mnist5k" / "sweep.toml").read_text(encoding="utf-8")
CALIBRATE = (REPO / "results" / "references" / "mnist5k-lenet" / "calibrate.toml").read_text(encoding="utf-8")
TUNE = (REPO / "results" / "tuning" / "mnist5k-pgd-at" / "tune.toml").read_text(encoding="utf-8")
CONFIG = """
[train]
method = "pgd-at"
arch = "lenet"
epochs = 2
batch_size = 64
lr = 0.001
eps = "0.3"
attack_steps = 10
schedule = "piecewise"
val_size = 100
"""


def _read_sweep(path: Path) -> Any:
    from midbench.bench.sweep_file import load_sweep

    return load_sweep(path)


def _read_config(path: Path) -> Any:
    from midbench.config import TrainConfig, load_config_file, merge_config

    return merge_config(TrainConfig(), load_config_file(path, "train"), {}).validate()


def _read_calibration(path: Path) -> Any:
    from midbench.bench.calibration import load_calibration

    return load_calibration(path)


def _read_tune(path: Path) -> Any:
    from midbench.bench.tuning import load_tuning

    return load_tuning(path)


def _read_registry(path: Path) -> Any:
    from midbench.attacks.specs import load_registry

    return load_registry([path.parent])


TOML_READERS = {"sweep": (_read_sweep, SWEEP), "train config": (_read_config, CONFIG),
                "calibration": (_read_calibration, CALIBRATE), "tune": (_read_tune, TUNE)}


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(TOML_READERS))
def test_toml_readers_load_or_refuse(kind: str, folder: Path) -> None:
    read, valid = TOML_READERS[kind]

    @FUZZ
    @given(text=st.one_of(toml_mutations(valid), st.text(max_size=200)))
    def check(text: str) -> None:
        holds_the_property(read, _write(folder / kind.replace(" ", "-"), "input.toml", text))

    (folder / kind.replace(" ", "-")).mkdir(exist_ok=True)
    check()


#: the first attack entry of the shipped profile with its passes written as an array instead of a table
_FIRST_ENTRY = (REPO / "attacks_registry" / "profile.toml").read_text(encoding="utf-8").split("\n[[attack]]")[1]
PASSES_AS_A_LIST = "[[attack]]" + "\n".join("passes = []" if line.startswith("passes = ") else line
                                             for line in _FIRST_ENTRY.splitlines()) + "\n"


@pytest.mark.slow
@pytest.mark.parametrize("shipped", ["profile.toml", "threat_models.toml", "suites.toml", "unforeseen_ua.toml"])
def test_an_extra_registry_folder_loads_or_is_refused(shipped: str, folder: Path) -> None:
    """A mutated copy of a shipped registry file, as the one file of an extra registry folder (``--registry-dir``)."""
    target = folder / f"registry-{shipped}"
    valid = (REPO / "attacks_registry" / shipped).read_text(encoding="utf-8")

    @FUZZ
    @given(text=st.one_of(toml_mutations(valid), st.text(max_size=200)))
    @example(text='[[suite]]\nname = []\nattacks = []\n')  # found by this test: TypeError (unhashable list)
    @example(text="suite = 3\n")
    @example(text='[[threat_model]]\nid = "x"\nnorm = 0\nladder = [1.0]\n')  # found: int has no strip()
    @example(text=PASSES_AS_A_LIST)  # found: AttributeError, a list has no items()
    def check(text: str) -> None:
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir()
        holds_the_property(_read_registry, _write(target, "extra.toml", text))

    check()


# ---- JSON readers --------------------------------------------------------------------------------------------

def _reference_document() -> Any:
    return json.loads((REPO / "results" / "references" / "mnist5k-lenet" / "reference.json").read_text())


def _result_document() -> Any:
    path = next(iter(sorted((REPO / "results" / "mnist5k" / "runs" / "mnist5k").glob("*.json"))))
    return json.loads(path.read_text())


def _read_reference(path: Path) -> Any:
    from midbench.evaluation.references import load_reference_set

    return load_reference_set(path)


def _read_result(path: Path) -> Any:
    from midbench.evaluation.documents import load_result_file

    return load_result_file(path)


def _read_sweep_state(path: Path) -> Any:
    from midbench.bench.state import load_state

    return load_state(path, "fingerprint")


JSON_READERS = {"reference table": (_read_reference, _reference_document, "reference.json"),
                "result": (_read_result, _result_document, "result.json"),
                "sweep state": (_read_sweep_state, lambda: {"fingerprint": "fingerprint", "training": {},
                                                           "evaluations": {}}, "sweep-state.json")}


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(JSON_READERS))
def test_json_readers_load_or_refuse(kind: str, folder: Path) -> None:
    read, valid, name = JSON_READERS[kind]
    target = folder / kind.replace(" ", "-")
    target.mkdir(exist_ok=True)

    @FUZZ
    @given(text=st.one_of(json_mutations(valid()), json_values.map(json.dumps), st.text(max_size=100)))
    @example(text="null")  # found by this test: the sweep state's reader raised AttributeError
    @example(text="\udcff")  # not UTF-8 once written: UnicodeDecodeError escaped the sweep state's reader
    def check(text: str) -> None:
        holds_the_property(read, _write(target, name, text))

    check()


# ---- binary readers ------------------------------------------------------------------------------------------

def _checkpoint_bytes(folder: Path) -> bytes:
    from midbench.artifacts.checkpoint import save_checkpoint
    from midbench.artifacts.metadata import ModelMetadata
    from midbench.models import build_model

    torch.manual_seed(0)
    model = build_model("test-mlp", 10, (1, 28, 28), (0.5,), (0.25,))
    path = folder / "valid.safetensors"
    save_checkpoint(path, model.state_dict(), ModelMetadata(arch="test-mlp", dataset="mnist5k", num_classes=10,
                                                            input_shape=(1, 28, 28), method="standard"))
    return _taken(path)


def _read_checkpoint(path: Path) -> Any:
    from midbench.artifacts.loading import load_classifier

    return load_classifier(path)


def _state_bytes(folder: Path) -> bytes:
    from midbench.evaluation.state import AttackProgress, EvalState

    path = folder / ".m__whitebox.evalstate.npz"
    state = EvalState.open(path, {"settings": 1})
    state.check_clean(np.ones(8, dtype=bool))
    state.record("pgd", AttackProgress(np.array([True, False] * 4), done=8, forward_passes=3, finished=True))
    state.finish(keep=True)
    path.with_name(path.name + ".lock").unlink()
    return _taken(path)


def _read_state(path: Path) -> Any:
    from midbench.evaluation.state import EvalState

    lock = path.with_name(path.name + ".lock")
    try:
        EvalState.open(path, {"settings": 1}).finish(keep=True)
    finally:
        lock.unlink(missing_ok=True)  # its own lock file, not a write of the reader


@pytest.mark.slow
def test_a_checkpoint_loads_or_is_refused(folder: Path) -> None:
    target = folder / "checkpoint"
    target.mkdir()
    valid = _checkpoint_bytes(target)
    header = 8 + int.from_bytes(valid[:8], "little")

    @FUZZ
    @given(data=st.one_of(byte_mutations(valid), byte_mutations(valid[:header]).map(lambda head: head + valid[header:]),
                          json_mutations(json.loads(valid[8:header])).map(
                              lambda text: len(text.encode()).to_bytes(8, "little") + text.encode() + valid[header:])))
    @example(data=b"")
    def check(data: bytes) -> None:
        holds_the_property(_read_checkpoint, _write(target, "model.safetensors", data))

    check()


def _legacy_bytes(folder: Path) -> bytes:
    """A state dict in torch's legacy (pre-1.6, non-zip) format, the format of the MID authors' release. The
    release reader wants a whole pickled module and refuses a state dict at its root, so mutations of this file
    exercise the pickle scan, the unpickler and the allow-list, not the reading of the storages after them."""
    path = folder / "legacy.pth"
    torch.manual_seed(0)
    torch.save({"conv1.weight": torch.randn(4, 1, 3, 3), "conv1.bias": torch.zeros(4)}, path,
               _use_new_zipfile_serialization=False)
    return _taken(path)


def _read_legacy(path: Path) -> Any:
    from midbench.mid.official import read_release_tensors

    return read_release_tensors(path)


def _read_transfer_cache_entry(path: Path) -> Any:
    """A cache entry is never an error: unreadable or with a wrong hash, it is dropped (None) and crafted again."""
    from midbench.evaluation.transfer_cache import _read

    entry = _read(path)
    assert entry is None or isinstance(entry, tuple)


def _cache_entry_bytes(folder: Path) -> bytes:
    from midbench.evaluation.transfer_cache import CacheStats, CacheStep

    step = CacheStep(folder / "step", CacheStats())
    step.store(np.arange(4), torch.rand(4, 1, 28, 28))
    (path,) = (folder / "step").glob("*.npz")
    data = _taken(path)
    shutil.rmtree(folder / "step")
    return data


#: a result of the committed demo table whose per-example file holds the profile's curves and pictures
DEMO_RESULT = min((REPO / "results" / "demo-mnist5k" / "runs" / "mnist5k").glob("mid-lenet__whitebox__*.json"))


def _matrix_bytes(folder: Path) -> bytes:
    shutil.copy(DEMO_RESULT, folder / DEMO_RESULT.name)
    return DEMO_RESULT.with_suffix(".npz").read_bytes()


def _read_matrix(path: Path) -> Any:
    """The two readers of a result's per-example ``.npz``: the leaderboard's (curves and matrix; a bad file is a
    skipped row with a warning, which is how a damaged result is refused there) and the report's pictures (a bad
    file means no pictures)."""
    import warnings

    from midbench.evaluation.documents import load_result_file
    from midbench.reporting.html import _examples_html
    from midbench.reporting.rows import LeaderboardWarning, Run, load_run

    result = path.with_suffix(".json")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LeaderboardWarning)
        run = load_run(result)
    assert run is None or isinstance(run, Run)
    assert isinstance(_examples_html({"paths": [str(result)]}, [load_result_file(result)]), str)


class _Wrapped(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(3, 2)


def _zoo_bytes(folder: Path) -> bytes:
    """Zoo weights as RobustBench's files hold them: a state dict wrapped under ``state_dict``, ``module.`` keys."""
    path = folder / "valid.pt"
    torch.manual_seed(0)
    torch.save({"state_dict": {f"module.{key}": value for key, value in _Wrapped().state_dict().items()}}, path)
    return _taken(path)


def _read_zoo_weights(path: Path) -> Any:
    from midbench.artifacts.zoo import _load_weights

    _load_weights(_Wrapped(), path)


BINARY_READERS = {"legacy pickle": (_read_legacy, _legacy_bytes, "release.pth"),
                  "transfer cache entry": (_read_transfer_cache_entry, _cache_entry_bytes, "0-4-entry.npz"),
                  "per-example matrix": (_read_matrix, _matrix_bytes, DEMO_RESULT.with_suffix(".npz").name),
                  "zoo weights": (_read_zoo_weights, _zoo_bytes, "weights.pt")}

#: what ``torch.load(weights_only=True)`` can return: nested containers of tensors and plain values
loadable_objects = st.recursive(
    st.one_of(st.none(), st.integers(), st.floats(), st.text(max_size=6),
              st.integers(min_value=0, max_value=3).map(lambda n: torch.zeros(n, 3)),
              st.sampled_from([torch.zeros(2, 3), torch.zeros(2), torch.zeros(2, 3, dtype=torch.int64)])),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.tuples(inner, inner),
                            st.dictionaries(st.one_of(st.text(max_size=20), st.integers()), inner, max_size=3),
                            st.fixed_dictionaries({"state_dict": st.dictionaries(
                                st.sampled_from(["linear.weight", "module.linear.bias", "linear.bias", "x"]),
                                inner, max_size=3)})),
    max_leaves=6)


@pytest.mark.slow
def test_zoo_weights_of_any_shape_load_or_are_refused(folder: Path) -> None:
    """Well-formed files that hold the wrong thing: any container of tensors and plain values ``torch.save`` can
    write and the ``weights_only`` loader reads back."""
    target = folder / "zoo-objects"
    target.mkdir()

    @FUZZ
    @given(value=loadable_objects)
    @example(value={0: None})  # found by this test: a key that is not a string raised AttributeError
    def check(value: Any) -> None:
        path = target / "weights.pt"
        torch.save(value, path)
        holds_the_property(_read_zoo_weights, path)

    check()


def test_a_cache_entry_whose_array_header_is_corrupt_is_dropped(folder: Path) -> None:
    """Found by the fuzz below: numpy's parser of a ``.npy`` header raises SyntaxError (or tokenize's TokenError)
    on a header cut at a bracket, which the cache reader did not catch."""
    target = folder / "corrupt-header"
    target.mkdir()
    valid = _cache_entry_bytes(target)
    assert valid.count(b"28, 28)") == 1
    holds_the_property(_read_transfer_cache_entry, _write(target, "0-4-entry.npz", valid.replace(b"28, 28)",
                                                                                                 b"28, 28(")))


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(BINARY_READERS))
def test_binary_readers_load_or_refuse(kind: str, folder: Path) -> None:
    read, valid_bytes, name = BINARY_READERS[kind]
    target = folder / kind.replace(" ", "-")
    target.mkdir()
    valid = valid_bytes(target)

    @FUZZ
    @given(data=byte_mutations(valid))
    def check(data: bytes) -> None:
        holds_the_property(read, _write(target, name, data))

    check()


def test_a_pickle_naming_a_huge_memo_entry_is_refused_at_once(folder: Path) -> None:
    """Found by the legacy-pickle fuzz: one byte changed into a LONG1 opcode shifts the stream so that a LONG_BINPUT
    names memo entry 1,258,647,924; CPython's unpickler then grew its memo table to that size (55 s, about 10 GB)
    before failing. Both of midbench's unpicklers now scan the pickle first."""
    import pickle
    import time

    from midbench.data.torchvision_sets import _read_cifar_batch

    target = folder / "memo"
    target.mkdir()
    corrupt = bytearray(_legacy_bytes(target))
    corrupt[3] = ord("c")
    huge_put = b"\x80\x02}q\x00r" + (1_258_647_924).to_bytes(4, "little") + b"."  # a dict memoised at that index
    assert pickle.loads(b"\x80\x02}r" + (5).to_bytes(4, "little") + b".") == {}  # the same opcodes, a small index
    for read, data in ((_read_legacy, bytes(corrupt)), (lambda path: _read_cifar_batch(path, b"labels"), huge_put)):
        started = time.perf_counter()
        with pytest.raises(ArtifactError):
            read(_write(target, "input.bin", data))
        assert time.perf_counter() - started < 5


@pytest.mark.slow
def test_an_evaluation_state_loads_or_is_refused(folder: Path) -> None:
    target = folder / "state"
    target.mkdir()
    valid = _state_bytes(target)

    @FUZZ
    @given(data=byte_mutations(valid))
    def check(data: bytes) -> None:
        holds_the_property(_read_state, _write(target, ".m__whitebox.evalstate.npz", data))

    check()


# ---- image folders ------------------------------------------------------------------------------------------------

FOLDER_TOML = """size = 20
resize = 24
channels = 3
eps = { Linf = 0.0314, L2 = 0.5 }
mean = [0.5, 0.5, 0.5]
std = [0.25, 0.25, 0.25]
"""


def _image_folder(target: Path) -> None:
    """Two class folders of one small valid PNG each: the fuzzed file is added beside them."""
    from PIL import Image

    for label in ("a", "b"):
        (target / label).mkdir(parents=True, exist_ok=True)
        pixels = np.random.default_rng(len(label)).integers(0, 256, (30, 26, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(target / label / "0.png")


def _read_folder(path: Path) -> Any:
    """``load_split`` of the folder ``path`` is in (its ``dataset.toml``, or an image of its class ``a``)."""
    from midbench.data import load_split
    from midbench.data.folders import _folder_spec

    _folder_spec.cache_clear()  # the spec is cached by the file's mtime, which two writes within a tick may share
    root = path.parent if path.name == "dataset.toml" else path.parent.parent
    return load_split(f"folder:{root}", "test")


def _image_bytes(kind: str) -> bytes:
    import io

    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 256, (18, 22, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, kind)
    return buffer.getvalue()


@pytest.mark.slow
def test_a_folder_dataset_toml_loads_or_is_refused(folder: Path) -> None:
    target = folder / "folder-toml"
    _image_folder(target)

    @FUZZ
    @given(text=st.one_of(toml_mutations(FOLDER_TOML), st.text(max_size=200)))
    @example(text=FOLDER_TOML.replace("mean = [0.5, 0.5, 0.5]", "mean = 0"))  # found by this test: TypeError
    def check(text: str) -> None:
        holds_the_property(_read_folder, _write(target, "dataset.toml", text))

    check()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["PNG", "JPEG"])
def test_an_image_file_of_a_folder_loads_or_is_refused(kind: str, folder: Path) -> None:
    """A mutated image among valid ones (sized by ``dataset.toml``, so any decodable size loads)."""
    target = folder / f"folder-{kind}"
    _image_folder(target)
    _write(target, "dataset.toml", "size = 16\neps = { Linf = 0.1 }\n")
    valid = _image_bytes(kind)

    @FUZZ
    @given(data=byte_mutations(valid))
    def check(data: bytes) -> None:
        holds_the_property(_read_folder, _write(target / "a", f"1.{kind.lower()}", data))

    check()

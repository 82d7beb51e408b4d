"""Adapters for models that do not take images in [0, 1] or do not return logits (docs/api.md, "Adapters").

midbench attacks images in [0, 1] and reads an N × classes logits tensor. Two kinds of models need a wrapper:

- a model trained on normalised inputs, whose normalisation lives in the data pipeline instead of the model
  (AutoAttack's and torchattacks' most common complaint): ``--normalize MEAN,STD`` puts ``(x − mean) / std`` in
  front of it, so attacks still move pixels in [0, 1] and ε keeps its meaning;
- a model that returns a tuple, a list, a dict or an object with attributes (auxiliary heads, Hugging Face
  outputs): ``--output INDEX`` or ``--output KEY`` picks the logits.

The adapters are part of what was evaluated: the result records them, and they enter the model's identity, so the
same weights with and without normalisation are two rows of a table.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from midbench.data.datasets import get_dataset
from midbench.errors import ArtifactError, UsageError
from midbench.models.modes import evaluating

#: examples in the shape check forward (two, so a model that squeezes the batch dimension is caught)
SHAPE_CHECK_BATCH = 2


@dataclass(frozen=True)
class Adapters:
    """What to put around a model: the normalisation in front (per-channel mean and std) and the output to read."""

    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    #: an index into a tuple or list, or a key of a dict (or an attribute of an output object)
    output: int | str | None = None

    def __bool__(self) -> bool:
        return self.mean is not None or self.output is not None

    def as_dict(self) -> dict[str, Any]:
        """The record a result keeps (``checkpoint.adapters``)."""
        record: dict[str, Any] = {}
        if self.mean is not None:
            record["normalize"] = {"mean": list(self.mean), "std": list(self.std or ())}
        if self.output is not None:
            record["output"] = self.output
        return record


def parse_adapters(normalize: str | None, output: str | None, channels: int,
                   dataset_mean: tuple[float, ...], dataset_std: tuple[float, ...]) -> Adapters:
    """``--normalize`` and ``--output`` as given.

    ``normalize``: ``dataset`` (the dataset's own mean and std), or ``channels`` means then ``channels`` stds,
    comma-separated (``0.1307,0.3081`` for one channel; six numbers for RGB). ``output``: a non-negative integer
    (an index) or a name (a key or attribute).

    Raises:
        UsageError: a count of numbers other than 2 × channels, a std that is not positive, an empty output.
    """
    mean = std = None
    if normalize is not None:
        if normalize.strip() == "dataset":
            mean, std = tuple(dataset_mean), tuple(dataset_std)
        else:
            try:
                numbers = [float(part) for part in normalize.split(",")]
            except ValueError:
                numbers = []
            if len(numbers) != 2 * channels:
                raise UsageError(f"--normalize {normalize!r}: give {channels} mean(s) then {channels} std(s), "
                                 f"comma-separated (e.g. {_example(channels)}), or 'dataset' for the dataset's own")
            mean, std = tuple(numbers[:channels]), tuple(numbers[channels:])
        if any(value <= 0 for value in std):
            raise UsageError(f"--normalize {normalize!r}: every std must be positive")
    picked: int | str | None = None
    if output is not None:
        text = output.strip()
        if not text:
            raise UsageError("--output is empty: give the index (e.g. 0) or the key (e.g. logits) of the logits")
        picked = int(text) if text.isdigit() else text
    return Adapters(mean, std, picked)


def _example(channels: int) -> str:
    return "0.1307,0.3081" if channels == 1 else "0.4914,0.4822,0.4465,0.2470,0.2435,0.2616"


class AdaptedModel(nn.Module):
    """``model`` behind the normalisation and with its logits picked out (:class:`Adapters`)."""

    def __init__(self, model: nn.Module, adapters: Adapters) -> None:
        super().__init__()
        self.model = model
        self.training = model.training  # the wrapped model's mode, not nn.Module's default (midbench.models.modes)
        self.output = adapters.output
        mean = std = torch.zeros(0)
        if adapters.mean is not None and adapters.std is not None:
            mean, std = (torch.tensor(values).view(1, -1, 1, 1) for values in (adapters.mean, adapters.std))
        # buffers, so that .to(device) moves them; never saved with a checkpoint (persistent=False)
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mean.numel():
            x = (x - self.mean) / self.std
        return pick_output(self.model(x), self.output)


def pick_output(output: Any, key: int | str | None) -> Any:  # noqa: ANN401
    """The part of a model's output that ``key`` names (None: the output itself).

    Raises:
        UsageError: the key does not fit the output (an index out of range, a missing key).
    """
    if key is None:
        return output
    if isinstance(key, int):
        if not isinstance(output, tuple | list) or key >= len(output):
            size = f"a {type(output).__name__} of {len(output)}" if isinstance(output, tuple | list) else \
                type(output).__name__
            raise UsageError(f"--output {key}: the model returns {size}; give an index it has, or a key")
        return output[key]
    if isinstance(output, dict):
        if key not in output:
            raise UsageError(f"--output {key}: the model's dict has the keys {', '.join(map(str, output))}")
        return output[key]
    if not hasattr(output, key):
        raise UsageError(f"--output {key}: the model returns a {type(output).__name__} without {key!r}")
    return getattr(output, key)


def which_adapter(output: Any, flag: str = "--output") -> str:  # noqa: ANN401
    """For a model whose output is not a logits tensor: the adapter that would read it, as advice for the error
    message (empty when there is none to suggest). ``flag``: ``--output`` (the command line) or ``output=`` (the
    Python API)."""
    def option(value: object) -> str:
        return f"{flag} {value}" if flag.startswith("--") else f"{flag}{value!r}"

    if isinstance(output, tuple | list) and output:
        tensors = [i for i, part in enumerate(output) if isinstance(part, torch.Tensor)]
        return f"; pick the logits by index, e.g. {option(tensors[0] if tensors else 0)}"
    if isinstance(output, dict) and output:
        keys = list(output)
        likely = next((k for k in keys if str(k).lower() in ("logits", "out", "output")), keys[0])
        return f"; pick the logits by key ({', '.join(map(str, keys))}), e.g. {option(likely)}"
    if hasattr(output, "logits"):
        return f"; pick the logits with {option('logits')}"
    return ""


def check_logits(model: nn.Module, label: str, dataset: str, device: torch.device, flag: str = "--output") -> None:
    """One forward on mid-grey images: the model must accept ``dataset``'s shape and return N × classes logits;
    ``label`` names it in the message, which says which adapter (``flag``) reads another output.

    Runs on the evaluation's device (a model may only work there) and on a forked RNG (a random model's draws
    here do not shift the evaluation's).

    Raises:
        ArtifactError: the forward fails or returns another shape or type (docs/reliability.md, bad input 1:
            exit 3).
    """
    spec = get_dataset(dataset)
    probe = torch.full((SHAPE_CHECK_BATCH, *spec.input_shape), 0.5, device=device)
    try:
        with evaluating(model), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), \
                torch.no_grad():
            output = model(probe)
    except UsageError:  # an adapter that does not fit the output says so itself
        raise
    except Exception as error:  # noqa: BLE001 - any failure here means the model does not fit the dataset
        raise ArtifactError(f"{label} fails on {dataset} inputs of shape {tuple(probe.shape)} "
                            f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})") from error
    expected = (SHAPE_CHECK_BATCH, spec.num_classes)
    if not isinstance(output, torch.Tensor) or tuple(output.shape) != expected:
        got = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise ArtifactError(f"{label} returns {got} for {SHAPE_CHECK_BATCH} {dataset} images; expected logits of "
                            f"shape {expected} ({spec.num_classes} classes){which_adapter(output, flag)}")


def adapted_identity(sha256: str, adapters: Adapters) -> str:
    """The identity of a model behind adapters: its own hash and what is around it (no adapters: unchanged)."""
    if not adapters:
        return sha256
    return hashlib.sha256(json.dumps({"model": sha256, "adapters": adapters.as_dict()},
                                     sort_keys=True).encode()).hexdigest()

"""``midbench regenerate``: MID's attack-suppressed images D_t(E_s(x)) drawn as a PNG grid.

The MID checkpoints here are assembled from untrained LeNets (no training): the grid's content only has to
match what the modules compute, not look good.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from midbench.artifacts.checkpoint import save_checkpoint
from midbench.artifacts.loading import load_with_aux
from midbench.cli.app import app
from midbench.data import load_split
from midbench.errors import UsageError
from midbench.mid.parts import assemble_mid_classifier, attach_decoder, regenerate
from midbench.mid.regenerate import PADDING, grid_size, regeneration_grid
from midbench.models import build_model

RUNNER = CliRunner()
SHAPE = (1, 28, 28)
N = 4
COMMON = {"arch": "lenet", "dataset": "mnist5k", "num_classes": 10, "input_shape": list(SHAPE), "mean": [0.0],
          "std": [1.0], "train_attacks": []}

try:
    from PIL import Image
except ImportError:  # pragma: no cover - Pillow ships with torchvision
    Image = None


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A plain source classifier, a teacher and a MID classifier naming the source (relatively)."""
    folder = tmp_path_factory.mktemp("mid")
    torch.manual_seed(0)
    source = build_model("lenet", 10, SHAPE)
    save_checkpoint(folder / "source.safetensors", source.state_dict(), {**COMMON, "method": "standard"})
    teacher = build_model("lenet", 10, SHAPE)
    attach_decoder(teacher, "lenet", SHAPE)
    save_checkpoint(folder / "teacher.safetensors", teacher.state_dict(), {**COMMON, "method": "mid-teacher"})
    student = build_model("lenet", 10, SHAPE)
    assemble_mid_classifier(student, teacher)
    save_checkpoint(folder / "mid.safetensors", student.state_dict(),
                    {**COMMON, "method": "mid", "source_checkpoint": "source.safetensors"})
    orphan = folder / "orphan"
    orphan.mkdir()
    save_checkpoint(orphan / "mid.safetensors", student.state_dict(),
                    {**COMMON, "method": "mid", "source_checkpoint": "source.safetensors"})
    return {"source": folder / "source.safetensors", "teacher": folder / "teacher.safetensors",
            "mid": folder / "mid.safetensors", "orphan": orphan / "mid.safetensors"}


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def _tiles(path: Path, rows: int, n: int) -> torch.Tensor:
    """The grid's tiles as uint8 (rows, n, 28, 28), from the PNG's first channel."""
    assert Image is not None
    with Image.open(path) as image:
        pixels = torch.from_numpy(np.array(image.convert("RGB")))[..., 0]
    step_h, step_w = SHAPE[1] + PADDING, SHAPE[2] + PADDING
    return torch.stack([torch.stack([pixels[PADDING + r * step_h:PADDING + r * step_h + SHAPE[1],
                                            PADDING + c * step_w:PADDING + c * step_w + SHAPE[2]]
                                     for c in range(n)]) for r in range(rows)])


def _as_png_bytes(images: torch.Tensor) -> torch.Tensor:
    """What save_image stores for float images in [0, 1] (N, 1, H, W) → uint8 (N, H, W)."""
    return images.mul(255).add(0.5).clamp(0, 255).to(torch.uint8)[:, 0]


def test_clean_rows_write_a_png_of_the_right_size(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "sub" / "grid.png"
    summary = regeneration_grid(checkpoints["mid"], out, n=N, device="cpu")
    assert summary["rows"] == ["clean", "regenerated clean"]
    assert summary["n"] == N and summary["path"] == str(out) and summary["attack"] is None
    assert all(len(summary["predictions"][row]) == N for row in summary["rows"])
    assert _png_size(out) == grid_size(2, N, SHAPE[1], SHAPE[2])
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]
    if Image is not None:
        with Image.open(out) as image:
            image.verify()


@pytest.mark.skipif(Image is None, reason="needs Pillow to read the PNG")
def test_regenerated_row_is_what_the_mid_modules_compute(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "grid.png"
    summary = regeneration_grid(checkpoints["mid"], out, n=N, device="cpu")
    model = load_with_aux(checkpoints["mid"]).model.eval()
    data = load_split("mnist5k", "test").subset(torch.arange(N))
    x = data.as_float()
    tiles = _tiles(out, 2, N)
    assert torch.equal(tiles[0], data.images[:, 0])
    assert torch.equal(tiles[1], _as_png_bytes(regenerate(model, x)))
    with torch.no_grad():
        assert summary["predictions"]["regenerated clean"] == model(regenerate(model, x)).argmax(1).tolist()
        assert summary["predictions"]["clean"] == model(x).argmax(1).tolist()
    assert summary["labels"] == data.labels.tolist()


@pytest.mark.parametrize("protocol", ["whitebox", "transfer"])
def test_attack_rows_differ_from_clean_within_eps(checkpoints: dict[str, Path], tmp_path: Path,
                                                  protocol: str) -> None:
    out = tmp_path / "grid.png"
    summary = regeneration_grid(checkpoints["mid"], out, n=N, attack_id="fgsm-linf", protocol=protocol,
                                device="cpu")
    assert summary["rows"] == ["clean", "regenerated clean", "adversarial", "regenerated adversarial"]
    assert summary["attack"].startswith("fgsm-linf@") and summary["protocol"] == protocol
    assert _png_size(out) == grid_size(4, N, SHAPE[1], SHAPE[2])
    if Image is None:
        return
    tiles = _tiles(out, 4, N).int()
    change = (tiles[2] - tiles[0]).abs()
    assert change.max() > 0
    assert change.max() <= round(summary["eps"] * 255) + 1
    assert not torch.equal(tiles[3], tiles[1])


def test_transfer_crafts_on_the_recorded_source(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    """FGSM is deterministic: the transfer grid's adversarial row is FGSM against the source model."""
    from midbench.artifacts.loading import load_classifier
    from midbench.attacks.specs import load_registry
    from midbench.data.datasets import get_dataset

    summary = regeneration_grid(checkpoints["mid"], tmp_path / "t.png", n=N, attack_id="fgsm-linf", device="cpu")
    source = load_classifier(checkpoints["source"]).model.eval()
    data = load_split("mnist5k", "test").subset(torch.arange(N))
    attack = load_registry().get("fgsm-linf").resolve(get_dataset("mnist5k").eps).build(seed=0, batch_size=N)
    x_adv = attack(source, data.as_float(), data.labels)
    model = load_with_aux(checkpoints["mid"]).model.eval()
    with torch.no_grad():
        assert summary["predictions"]["adversarial"] == model(x_adv).argmax(1).tolist()
    if Image is not None:
        assert torch.equal(_tiles(tmp_path / "t.png", 4, N)[2], _as_png_bytes(x_adv))


def test_transfer_without_the_source_file_is_a_usage_error(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--protocol whitebox"):
        regeneration_grid(checkpoints["orphan"], tmp_path / "g.png", n=2, attack_id="fgsm-linf", device="cpu")
    assert not (tmp_path / "g.png").exists()
    # without an attack, or white-box, the source is not needed
    regeneration_grid(checkpoints["orphan"], tmp_path / "g.png", n=2, device="cpu")
    regeneration_grid(checkpoints["orphan"], tmp_path / "w.png", n=2, attack_id="fgsm-linf", protocol="whitebox",
                      device="cpu")


@pytest.mark.parametrize("which", ["source", "teacher"])
def test_cli_refuses_a_non_mid_checkpoint_with_exit_2(checkpoints: dict[str, Path], tmp_path: Path,
                                                      which: str) -> None:
    out = tmp_path / "grid.png"
    result = RUNNER.invoke(app, ["regenerate", str(checkpoints[which]), "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 2, result.output
    assert "not a MID classifier" in result.output or "MID teacher" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not out.exists()


def test_cli_draws_the_grid_and_prints_predictions(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "grid.png"
    result = RUNNER.invoke(app, ["regenerate", str(checkpoints["mid"]), "--out", str(out), "--n", "3",
                                 "--attack", "fgsm-linf", "--protocol", "transfer", "--dataset", "mnist5k",
                                 "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert str(out) in result.output.replace("\n", "")
    for row in ("regenerated clean", "adversarial", "regenerated adversarial"):
        assert row in result.output
    assert _png_size(out) == grid_size(4, 3, SHAPE[1], SHAPE[2])


@pytest.mark.parametrize(("args", "message"), [
    (["--protocol", "blackbox"], "'blackbox' is not one of 'whitebox', 'transfer'"),
    (["--n", "0"], "--n"),
    (["--attack", "pgd-lnf"], "Did you mean 'pgd-linf'"),
])
def test_cli_usage_errors(checkpoints: dict[str, Path], tmp_path: Path, args: list[str], message: str) -> None:
    result = RUNNER.invoke(app, ["regenerate", str(checkpoints["mid"]), "--out", str(tmp_path / "g.png"),
                                 "--device", "cpu", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_cli_help_has_an_example() -> None:
    result = RUNNER.invoke(app, ["regenerate", "--help"])
    assert result.exit_code == 0
    assert "Example" in result.output

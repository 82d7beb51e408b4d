"""The optimised corruptions (midbench.attacks.latent and its subclasses), parametrised over every registry entry
whose implementation is a latent attack, so a new one is tested as soon as it is registered.

Each must keep its latents inside their box and its images in [0, 1] and be exactly the render of the latents it
reports, be the identity at budget 0, not depend on its batch, and, climbed nested over its ladder on an undefended
model, lower accuracy from the smallest strength to the full one. The registry-wide contract and pass-count
tests (test_attacks.py, test_attack_passes.py) cover them too.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from attack_inputs import model_and_batch
from torch import nn

from midbench.attacks import randomness
from midbench.attacks.latent import LatentAttack
from midbench.attacks.plans import colour_only, profile_plan
from midbench.attacks.specs import load_implementation, load_registry
from midbench.data import get_dataset
from midbench.data.datasets import TensorSplit
from midbench.errors import UsageError

REGISTRY = load_registry()
MNIST_EPS = get_dataset("mnist5k").eps
LATENT_IDS = sorted(attack_id for attack_id, spec in REGISTRY.attacks.items()
                    if issubclass(load_implementation(spec.implementation)[0], LatentAttack))
#: one single-strength entry per corruption threat model (Kang et al.'s sign-PGD-20)
UA_IDS = [spec.id for spec in REGISTRY.suite("unforeseen-ua")]
GREY_IDS = [attack_id for attack_id in UA_IDS if not REGISTRY.get(attack_id).resolve(MNIST_EPS).needs_colour]
#: the profile's entries of the same threat models (Auto-PGD on the latents)
PROFILE_UA = "unknown-profile-ua"


def _resolved(attack_id: str, scale: float = 1.0, steps: int = 4):  # noqa: ANN202
    """The entry with its budget scaled by ``scale`` and ``steps`` PGD steps."""
    spec = REGISTRY.get(attack_id)
    params = {**spec.params, "steps": steps}
    params.update({name: params[name] * scale for name in spec.budget})
    return replace(spec, params=params).resolve(MNIST_EPS)


def test_the_registry_has_the_corruptions_of_the_breadth_issue() -> None:
    """At least twelve optimised corruptions, each its own threat model, and at least 20 threat models in all;
    the profile's suite of them has one entry per threat model, extending the single-strength one."""
    assert len(UA_IDS) >= 12 and len(REGISTRY.threat_models) >= 20
    assert all(REGISTRY.get(attack_id).threat_model == attack_id for attack_id in UA_IDS)
    profile = REGISTRY.suite(PROFILE_UA)
    assert [spec.threat_model for spec in profile] == UA_IDS
    for spec in profile:
        base = REGISTRY.get(spec.threat_model)
        assert spec.implementation == base.implementation and spec.budget == base.budget
        assert {name: spec.params[name] for name in spec.budget} == {name: base.params[name] for name in base.budget}


@pytest.mark.parametrize("attack_id", LATENT_IDS)
def test_latents_stay_in_their_box_and_the_image_is_their_render(attack_id: str,
                                                                  request: pytest.FixtureRequest) -> None:
    resolved = _resolved(attack_id)
    model, x, y = model_and_batch(resolved, request)
    x, y = x[:12], y[:12]
    seeds = list(range(12))
    attack = resolved.build()
    with randomness.per_example_generators(seeds):
        images = attack(model, x, y)
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
    assert attack.last_latent is not None and float(attack.last_latent.abs().max()) <= 1.0
    assert attack.last_success is not None
    with torch.no_grad():  # an example counted as broken is broken by the image returned for it
        assert bool((model(images).argmax(dim=1) != y)[attack.last_success].all())
    if attack.RANDOM_STRUCTURE and attack.restarts * len(attack.losses) > 1:
        return  # later runs draw other structure, which the latents alone do not say (test below)
    with randomness.per_example_generators(seeds):  # the same random structure (flakes, shapes) as the attack drew
        render = resolved.build().renderer(x)
    with torch.no_grad():
        rendered = render(attack.last_latent, torch.arange(12))
    assert torch.allclose(images, rendered, atol=1e-6)


@pytest.mark.parametrize("optimizer", ["pgd", "apgd"])
@pytest.mark.parametrize("attack_id", [attack_id for attack_id in GREY_IDS
                                       if load_implementation(REGISTRY.get(attack_id).implementation)[0]
                                       .RANDOM_STRUCTURE])
def test_every_restart_draws_new_structure(attack_id: str, optimizer: str, request: pytest.FixtureRequest) -> None:
    """Random structure (flake, point and shape positions) is searched over, not fixed by the first draw: with
    restarts, an example unbroken by the first run is attacked under another structure, its image is the one that
    broke it, and the first run is the single-restart attack exactly."""
    resolved = _resolved(attack_id, scale=0.3, steps=3)  # small enough that some examples survive a run
    model, x, y = model_and_batch(resolved, request)
    x, y = x[:16], y[:16]
    with_optimizer = replace(resolved, params={**resolved.params, "optimizer": optimizer, "losses": ["ce"]})
    once = with_optimizer.build()
    again = replace(with_optimizer, params={**with_optimizer.params, "restarts": 4}).build()
    drawn = []
    original = again.renderer

    def recording(batch: torch.Tensor):  # noqa: ANN202
        render = original(batch)
        drawn.append(render(torch.full(again.latent_shape(batch), 0.5), torch.arange(batch.shape[0])))
        return render

    again.renderer = recording  # type: ignore[method-assign]
    with randomness.per_example_generators(list(range(16))):
        first = once(model, x, y)
    with randomness.per_example_generators(list(range(16))):
        images = again(model, x, y)
    assert once.last_success is not None and again.last_success is not None
    assert len(drawn) > 1 and not torch.allclose(drawn[0], drawn[1])
    broken_first = once.last_success
    assert bool(again.last_success[broken_first].all())
    assert torch.equal(images[broken_first], first[broken_first])
    with torch.no_grad():
        assert bool((model(images).argmax(dim=1) != y)[again.last_success].all())


@pytest.mark.parametrize("attack_id", LATENT_IDS)
def test_zero_budget_is_the_identity(attack_id: str, request: pytest.FixtureRequest) -> None:
    """Up to float rounding of the resampling warps (kornia's grids)."""
    resolved = _resolved(attack_id, scale=0.0)
    model, x, y = model_and_batch(resolved, request)
    assert torch.allclose(resolved.build()(model, x, y), x, atol=1e-5)


@pytest.mark.parametrize("attack_id", LATENT_IDS)
def test_an_example_attack_does_not_depend_on_its_batch(attack_id: str, request: pytest.FixtureRequest) -> None:
    """Per-example generators (what the profile uses): examples 0–3 attacked alone or with 4–7 give the same
    images, random structure included."""
    resolved = _resolved(attack_id)
    model, x, y = model_and_batch(resolved, request)
    with randomness.per_example_generators(list(range(8))):
        together = resolved.build()(model, x[:8], y[:8])
    with randomness.per_example_generators(list(range(4))):
        alone = resolved.build()(model, x[:4], y[:4])
    assert torch.allclose(together[:4], alone, atol=1e-6)


@pytest.mark.parametrize("attack_id", LATENT_IDS)
def test_bad_parameters_are_one_line_usage_errors(attack_id: str) -> None:
    attack_class = load_implementation(REGISTRY.get(attack_id).implementation)[0]
    budget = next(iter(attack_class.BUDGET))
    positive = [{name: 0.0} for name in attack_class.POSITIVE]
    for bad in ({budget: "large"}, {budget: -1.0}, {"steps": 0}, {"no_such_parameter": 1}, *positive):
        with pytest.raises(UsageError) as error:
            attack_class(**bad)
        assert "\n" not in str(error.value)


def test_a_colour_attack_refuses_grey_images_and_the_profile_leaves_it_out(standard_model: nn.Module,
                                                                          small_batch: tuple[torch.Tensor,
                                                                                             torch.Tensor]) -> None:
    colour = [attack_id for attack_id in UA_IDS if attack_id not in GREY_IDS]
    assert colour, "the registry has a colour corruption (hsv)"
    with pytest.raises(UsageError, match="colour"):
        _resolved(colour[0]).build()(standard_model, *small_batch)
    plans = profile_plan(REGISTRY, MNIST_EPS, set(), suite="unforeseen-ua", channels=1)
    assert {plan.threat_model.id for plan in plans} == set(GREY_IDS)
    assert set(colour_only(REGISTRY, "unforeseen-ua")) == set(colour)
    on_colour = profile_plan(REGISTRY, MNIST_EPS, set(), suite="unforeseen-ua", channels=3)
    assert {plan.threat_model.id for plan in on_colour} == set(UA_IDS)
    assert set(colour_only(REGISTRY, ("unknown-profile", PROFILE_UA))) == set(colour)
    with pytest.raises(UsageError, match="colour"):
        profile_plan(REGISTRY, MNIST_EPS, set(), suite="unforeseen-ua", channels=1, only=(colour[0],))


def _cheap_copies() -> str:
    """Every grey latent entry again as ``t-<id>`` with 4 steps, and a suite climbing them."""
    lines = []
    for attack_id in GREY_IDS:
        spec = REGISTRY.get(attack_id)
        params = ", ".join(f"{key} = {str(value).lower() if isinstance(value, bool) else value}"
                           for key, value in {**spec.params, "steps": 4}.items())
        budget = ", ".join(f'"{name}"' for name in spec.budget)
        lines.append(f'[[attack]]\nid = "t-{attack_id}"\nversion = 1\nfamily = "{spec.family}"\n'
                     f'threat_model = "{spec.threat_model}"\nbudget = [{budget}]\n'
                     f'implementation = "{spec.implementation}"\ncitation = "test"\nparams = {{ {params} }}\n')
    suite = ", ".join(f'"t-{attack_id}"' for attack_id in GREY_IDS)
    return "\n".join(lines) + f'\n[[suite]]\nname = "test-corruptions"\nattacks = [{suite}]\n'


@pytest.mark.slow
def test_nested_climb_lowers_accuracy_along_every_ladder_and_equals_independent_runs(
        standard_model: nn.Module, mnist5k_test: TensorSplit, tmp_path: Path) -> None:
    """Climbed nested over the default ladder, each example's robustness at strength k equals the AND of
    independent evaluations at every strength up to k, run with another batch size (exact: per-example
    generators). The curve cannot rise; and the undefended model must lose accuracy from the smallest strength
    (a tenth of the budget, a barely visible change) to the full one, where each corruption was sized to break
    most of an undefended LeNet's predictions."""
    from test_profile import assert_nested_climb_equals_independent_runs

    (tmp_path / "unforeseen_ua.toml").write_text(_cheap_copies())
    registry = load_registry([tmp_path])
    data = mnist5k_test.subset(torch.arange(32))
    plans = profile_plan(registry, MNIST_EPS, set(), suite="test-corruptions", channels=1)
    assert {plan.threat_model.id for plan in plans} == set(GREY_IDS)
    curves, _ = assert_nested_climb_equals_independent_runs(standard_model, data, plans)
    for plan, curve in zip(plans, curves, strict=True):
        accuracy = curve.robust.mean(axis=0)
        assert accuracy[0] > accuracy[-1], plan.threat_model.id


def test_attacks_show_draws_the_ladder_at_random_latents_and_on_a_model(standard_checkpoint: Path,
                                                                        tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from midbench.cli.app import app

    attack_id = GREY_IDS[0]
    plain = CliRunner().invoke(app, ["attacks", "show", attack_id, "--image", str(tmp_path / "plain.png"),
                                     "--n-images", "3"])
    assert plain.exit_code == 0, plain.output
    on_model = CliRunner().invoke(app, ["attacks", "show", attack_id, "--image", str(tmp_path / "model.svg"),
                                        "--n-images", "2", "--model", str(standard_checkpoint)])
    assert on_model.exit_code == 0, on_model.output
    assert (tmp_path / "plain.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "model.svg").read_text().count("<image") == 2 * (1 + len(REGISTRY.threat_models[
        attack_id].ladder))  # one picture per cell: clean and every rung, for each test image


@pytest.mark.parametrize(("arguments", "message"), [
    (["attacks", "show", "pgd-linf", "--image", "{out}/x.png"], "give --model"),
    (["attacks", "show", "hsv", "--image", "{out}/x.png"], "needs colour"),
    (["attacks", "show", "fog", "--image", "{out}/x.png", "--n-images", "0"], "--n-images"),
    (["eval", "{checkpoint}", "--attacks", "hsv", "--results-dir", "{out}"], "need colour"),
    (["eval", "{checkpoint}", "--unknown-attacks", "--threat-models", "no-such-threat",
      "--results-dir", "{out}"], "no-such-threat"),
    (["eval", "{checkpoint}", "--unknown-attacks", "--profile-suite", "unknown-profile-uaa",
      "--results-dir", "{out}"], "unknown-profile-ua"),
    (["eval", "{checkpoint}", "--attacks", "fgsm-linf", "--profile-suite", "unknown-profile-ua",
      "--results-dir", "{out}"], "add --unknown-attacks"),
    (["eval", "{checkpoint}", "--unknown-attacks", "--profile-suite", "unknown-profile-ua", "--threat-models", "hsv",
      "--results-dir", "{out}"], "need colour"),
], ids=["show-needs-a-model", "show-colour-on-grey", "show-no-images", "eval-colour-on-grey",
        "eval-unknown-threat-model", "eval-unknown-profile-suite", "eval-profile-suite-without-profile",
        "eval-colour-threat-model-on-grey"])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(arguments: list[str], message: str,
                                                          standard_checkpoint: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from midbench.cli.app import app

    out = tmp_path / "out"
    result = CliRunner().invoke(app, [a.format(out=out, checkpoint=standard_checkpoint) for a in arguments])
    assert result.exit_code == 2, result.output
    error = [line for line in result.output.splitlines() if line.startswith("midbench: error")]
    assert len(error) == 1 and message in error[0], result.output
    assert not out.exists() or not any(out.rglob("*"))


def test_on_colour_data_every_corruption_runs_hsv_included(tmp_path: Path) -> None:
    """CIFAR-format files (the torchvision layout, written by the data tests) and a user model: the whole
    ``unforeseen-ua`` suite runs, the colour-only threat model too, each at most as accurate as clean."""
    import json

    from test_data_torchvision import write_cifar10
    from typer.testing import CliRunner

    from midbench.cli.app import app

    write_cifar10(tmp_path / "data")
    outcome = CliRunner().invoke(app, ["eval", "--model", "user_models:honest_cnn", "--dataset", "cifar10",
                                       "--data-dir", str(tmp_path / "data"), "--suite", "unforeseen-ua",
                                       "--n-examples", "4", "--results-dir", str(tmp_path / "r"), "--quiet",
                                       "--format", "json"])
    assert outcome.exit_code == 0, outcome.output
    document = json.loads(outcome.stdout[outcome.stdout.index("{"):])
    ran = {row["id"].split("@")[0]: row["robust_accuracy"] for row in document["attacks"]}
    assert set(ran) == set(UA_IDS) and "hsv" in ran
    assert all(accuracy <= document["clean_accuracy"] for accuracy in ran.values())


def test_attacks_list_shows_every_threat_model() -> None:
    from typer.testing import CliRunner

    from midbench.cli.app import app

    listed = CliRunner().invoke(app, ["attacks", "list"], env={"COLUMNS": "200"})
    assert listed.exit_code == 0, listed.output
    assert f"threat models ({len(REGISTRY.threat_models)})" in listed.output
    assert all(f"│ {model_id} " in listed.output for model_id in REGISTRY.threat_models)


@pytest.mark.parametrize("colour", [False, True], ids=["mnist5k", "cifar-format"])
def test_the_profile_with_the_corruption_suite_climbs_every_applicable_threat_model(
        colour: bool, standard_checkpoint: Path, tmp_path: Path) -> None:
    """``--profile-suite unknown-profile-ua``: on mnist5k every grey corruption is climbed over its ladder and hsv
    is listed as skipped; on CIFAR-format files hsv is climbed too. The result names the suite it climbed."""
    import json

    from typer.testing import CliRunner

    from midbench.cli.app import app

    if colour:
        from test_data_torchvision import write_cifar10

        write_cifar10(tmp_path / "data")
        model = ["--model", "user_models:honest_cnn", "--dataset", "cifar10", "--data-dir", str(tmp_path / "data")]
    else:
        model = [str(standard_checkpoint)]
    outcome = CliRunner().invoke(app, ["eval", *model, "--unknown-attacks", "--profile-suite", PROFILE_UA,
                                       "--n-examples", "3", "--results-dir", str(tmp_path / "r"), "--quiet",
                                       "--format", "json"])
    assert outcome.exit_code == 0, outcome.output
    profile = json.loads(outcome.stdout[outcome.stdout.index("{"):])["profile"]
    assert profile["suite"] == PROFILE_UA
    climbed = [curve["id"] for curve in profile["threat_models"]]
    assert climbed == (UA_IDS if colour else GREY_IDS)
    assert [item["id"] for item in profile.get("skipped", [])] == ([] if colour else ["hsv"])

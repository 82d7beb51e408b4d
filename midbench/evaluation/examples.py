"""What an attack does to a few test images along its threat model's ladder: the data of ``midbench attacks show
ID --image OUT.png`` (drawn by :func:`midbench.reporting.plots.draw.examples_figure`; docs/unforeseen.md has the
pictures).

With a model, every rung is the attack's worst case on that model (the images a table's numbers count); without
one, an optimised corruption (:class:`midbench.attacks.latent.LatentAttack`) is drawn at random latents in its
box, which shows what its threat model allows without any model behind it. Each image draws its random structure
and start from its own generator (:mod:`midbench.attacks.randomness`), so a picture is reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from midbench.attacks import randomness
from midbench.attacks.latent import LatentAttack
from midbench.attacks.plans import ThreatModelPlan, at_strength, ladder_of
from midbench.attacks.specs import AttackRegistry, ResolvedAttack
from midbench.data import TensorSplit
from midbench.errors import UsageError

#: test images per threat model whose attacked versions an evaluation with a profile keeps in its per-example file
#: (``examples_<threat model>``), for the report's pictures
PROFILE_EXAMPLES = 4


@dataclass(frozen=True)
class ExampleGrid:
    """Rows: the clean images, then one row per strength; columns: the test images."""

    attack: str
    threat_model: str
    strengths: tuple[float, ...]
    #: (1 + strengths, images, H, W, C) in [0, 1]
    images: np.ndarray
    labels: tuple[int, ...]
    #: the model's prediction on each cell, when a model was given
    predictions: np.ndarray | None


def attacked_rows(attacks: list[ResolvedAttack], x: torch.Tensor, y: torch.Tensor, model: nn.Module | None,
                  seed: int) -> torch.Tensor:
    """``x`` and, for each attack (one per strength), its images: (1 + attacks, N, C, H, W). With a model, each
    attack's worst case on it; without one, an optimised corruption at random latents in its box.

    Raises:
        UsageError: no model for an attack that is not a latent corruption, or a colour attack on grey images.
    """
    seeds = randomness.example_seeds(seed, range(len(y)))
    rows = [x]
    for resolved in attacks:
        if resolved.needs_colour and x.shape[1] != 3:
            raise UsageError(f"attack {resolved.id} needs colour images, and these have {x.shape[1]} channel(s)")
        attack = resolved.build(seed=seed)
        with randomness.per_example_generators(seeds):
            if model is not None:
                rows.append(attack(model, x, y))
            elif isinstance(attack, LatentAttack):
                render = attack.renderer(x)
                latent = randomness.uniform_like(torch.zeros(attack.latent_shape(x), dtype=x.dtype,
                                                             device=x.device), -1.0, 1.0)
                with torch.no_grad():
                    rows.append(render(latent, torch.arange(len(y), device=x.device)))
            else:
                raise UsageError(f"attack {resolved.id} is not a corruption with latents to draw at random; "
                                 "give --model CHECKPOINT to draw its worst case on that model")
    return torch.stack(rows).detach()


def example_grid(registry: AttackRegistry, attack_id: str, dataset: str, dataset_eps: dict[str, float],
                 data: TensorSplit, model: nn.Module | None = None, seed: int = 0) -> ExampleGrid:
    """The grid of ``attack_id`` on ``data`` (a few test images) over its threat model's ladder on ``dataset``.

    Raises:
        UsageError: the entry belongs to no threat model or declares no budget, and :func:`attacked_rows`'s.
    """
    spec = registry.get(attack_id)
    if spec.threat_model is None or not spec.budget:
        raise UsageError(f"attack {attack_id} has no threat model with a budget, so it has no ladder to draw")
    strengths = ladder_of(registry, registry.threat_models[spec.threat_model], dataset)
    x, y = data.as_float(), data.labels.clone()
    rows = attacked_rows([at_strength(spec, dataset_eps, s) for s in strengths], x, y, model, seed)
    predictions = None
    if model is not None:
        with torch.no_grad():
            predictions = np.stack([model(row).argmax(1).numpy() for row in rows])
    return ExampleGrid(attack_id, spec.threat_model, tuple(strengths), rows.permute(0, 1, 3, 4, 2).numpy(),
                       tuple(int(v) for v in y), predictions)


#: the effort of the report's illustrations: enough to show what a rung allows, a small share of the evaluation's
ILLUSTRATION_EFFORT = {"steps": 5, "restarts": 1}


def illustrative(attack: ResolvedAttack) -> ResolvedAttack:
    """``attack`` with its effort capped (:data:`ILLUSTRATION_EFFORT`, and only its first loss): the pictures of a
    result illustrate its threat models; its numbers come from the full attacks."""
    params = dict(attack.params)
    for name, cap in ILLUSTRATION_EFFORT.items():
        if isinstance(params.get(name), int) and not isinstance(params[name], bool):
            params[name] = min(params[name], cap)
    if isinstance(params.get("losses"), list) and params["losses"]:
        params["losses"] = params["losses"][:1]
    return replace(attack, params=params)


def profile_examples(model: nn.Module, x: torch.Tensor, y: torch.Tensor, plans: list[ThreatModelPlan],
                     seed: int) -> dict[str, np.ndarray]:
    """Per threat model of the profile, what its first attack (:func:`illustrative`: effort capped) does to ``x``
    at every rung, climbed as the profile climbs: an image the model already gets wrong keeps its fooling version
    at the stronger rungs (which allow it too) and is not attacked again. 8-bit images (1 + rungs, N, H, W, C):
    the pictures the report shows beside the curves."""
    examples = {}
    seeds = randomness.example_seeds(seed, range(len(y)))
    for plan in plans:
        current = x.clone()
        with torch.no_grad():
            standing = model(x).argmax(1) == y
        rows = [x]
        for rung in plan.rungs:
            chosen = standing.nonzero().flatten()
            if chosen.numel():
                attack = illustrative(rung.attacks[0]).build(seed=seed)
                with randomness.per_example_generators([seeds[i] for i in chosen.tolist()]):
                    attacked = attack(model, x[chosen], y[chosen]).detach()
                current[chosen] = attacked
                with torch.no_grad():
                    standing[chosen] = model(attacked).argmax(1) == y[chosen]
            rows.append(current.clone())
        images = torch.stack(rows).permute(0, 1, 3, 4, 2).cpu().numpy()
        examples[plan.threat_model.id] = (images * 255).round().astype(np.uint8)
    return examples

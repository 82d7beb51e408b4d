"""The forward/backward passes each registry entry declares are what the attack really costs (exact counts).

Entries whose cost depends on when examples succeed (DeepFool and the rotation/translation grid stop early)
declare an upper bound instead.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from attack_inputs import model_and_batch

from midbench.attacks.specs import load_registry
from midbench.data import get_dataset
from midbench.evaluation.counting import PassCounter

REGISTRY = load_registry()
SMALL = {"steps": 3, "search_steps": 2, "samples": 4, "angle_steps": 3, "shift_steps": 2}
# attacks that stop on an example once it is broken: their declared passes are what an unbroken example costs
UPPER_BOUNDS = {"apgd-l1", "apgd-l2", "apgd-linf", "deepfool-l2", "deepfool-linf", "elastic-apgd", "jpeg-apgd",
                "rot-trans", "rot-trans-coarse", *(spec.id for spec in REGISTRY.suite("unknown-profile-ua"))}
DECLARED = sorted(a for a, spec in REGISTRY.attacks.items() if spec.passes)


@pytest.mark.parametrize("attack_id", DECLARED)
def test_declared_passes_match_counted_passes(attack_id: str, request: pytest.FixtureRequest) -> None:
    spec = REGISTRY.get(attack_id)
    spec = replace(spec, params={k: (SMALL.get(k, v) if isinstance(v, int) and not isinstance(v, bool) else v)
                                 for k, v in spec.params.items()})
    resolved = spec.resolve(get_dataset("mnist5k").eps)
    model, x, y = model_and_batch(resolved, request)
    x, y = x[:8], y[:8]
    counter = PassCounter(model)
    torch.manual_seed(0)
    resolved.build()(counter, x, y)
    counted = {"forward": counter.forward_passes / 8, "backward": counter.backward_passes / 8}
    # an attack that says it follows gradients must take some, and one that only queries must take none
    assert resolved.uses_gradients == (counter.backward_passes > 0)
    for kind, declared in spec.passes_per_example().items():
        if attack_id in UPPER_BOUNDS:
            assert counted[kind] <= declared, (kind, counted, declared)
        else:
            assert counted[kind] == declared, (kind, counted, declared)

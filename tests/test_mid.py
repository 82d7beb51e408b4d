"""MID (Zhang et al., TPAMI 2024): the consistency losses, the meta step's gradient, the pass counts, and a
tiny end-to-end run with its stages, frozen teacher parts, checkpoint and exact resume."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from midbench.artifacts.checkpoint import load_checkpoint
from midbench.artifacts.loading import load_with_aux
from midbench.config import TrainConfig
from midbench.mid.losses import ConsistencyWeights, channel_kl, channel_log_softmax, task_loss
from midbench.mid.meta import MetaSettings, meta_step
from midbench.mid.parts import MidModules, assemble_mid_classifier, attach_decoder
from midbench.models import build_model
from midbench.training import train

SHAPE = (1, 28, 28)


def _mid_classifier(seed: int = 0, dtype: torch.dtype = torch.float32) -> nn.Module:
    torch.manual_seed(seed)
    teacher = build_model("lenet", 10, SHAPE)
    attach_decoder(teacher, "lenet", SHAPE)
    student = build_model("lenet", 10, SHAPE)
    assemble_mid_classifier(student, teacher)
    return student.to(dtype)


def _tasks(batch: int, n_attacks: int, dtype: torch.dtype = torch.float32, seed: int = 1
           ) -> tuple[list[torch.Tensor], torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, *SHAPE, generator=generator, dtype=dtype)
    tasks = [x] + [(x + 0.3 * (2 * torch.rand(x.shape, generator=generator, dtype=dtype) - 1)).clamp(0, 1)
                   for _ in range(n_attacks)]
    return tasks, torch.randint(10, (batch,), generator=generator)


# --- losses ---------------------------------------------------------------------------------------------------


def test_channel_kl_has_the_release_reduction() -> None:
    """The release's ``nn.KLDivLoss()(log_softmax(student), softmax(teacher))`` (PyTorch 0.4.1's default
    reduction averages over every element, batch × channels × positions): the same value here."""
    torch.manual_seed(0)
    teacher, student = torch.randn(3, 5, 4, 4), torch.randn(3, 5, 4, 4)
    # reduction="none" then .mean(): the 0.4.1 default, written out (torch's "mean" warns it will change meaning)
    release = nn.functional.kl_div(torch.log_softmax(student, 1), torch.softmax(teacher, 1), reduction="none").mean()
    assert torch.allclose(channel_kl(channel_log_softmax(teacher), student), release, atol=1e-7)
    assert float(channel_kl(channel_log_softmax(teacher), teacher)) == pytest.approx(0.0, abs=1e-7)


def test_channel_kl_by_hand() -> None:
    """Two channels at one position: teacher logits (0, ln 3) → P = (1/4, 3/4); student (0, 0) → Q = (1/2, 1/2).
    KL(P‖Q) = 1/4·ln(1/2) + 3/4·ln(3/2), and the element mean divides it by the 2 channels. A channel *sum*
    (the scale before this fix) would be twice as large."""
    teacher = torch.tensor([0.0, math.log(3.0)]).view(1, 2, 1, 1)
    student = torch.zeros(1, 2, 1, 1)
    by_hand = (0.25 * math.log(0.5) + 0.75 * math.log(1.5)) / 2
    assert float(channel_kl(channel_log_softmax(teacher), student)) == pytest.approx(by_hand, rel=1e-6)


def test_kl_terms_stay_finite_for_extreme_features() -> None:
    """Fault 3 of the release (log-probabilities as the KL target → NaN): every term must stay finite."""
    huge = torch.tensor([[1e4, -1e4, 0.0]]).view(1, 3, 1, 1)
    other = torch.tensor([[-1e4, 1e4, 0.0]]).view(1, 3, 1, 1).requires_grad_()
    value = channel_kl(channel_log_softmax(huge), other)
    value.backward()
    assert math.isfinite(float(value.detach())) and torch.isfinite(other.grad).all()


def _independent_consistency(model: nn.Module, x_clean: torch.Tensor, x_adv: torch.Tensor
                             ) -> tuple[torch.Tensor, torch.Tensor]:
    """AC and CC of the LeNet MID classifier written out with functional ops from docs/mid.md: the
    student's own pooling indices unpool its feature through the teacher's decoder, and both KLs use the
    release's ``nn.KLDivLoss()`` reduction (element mean)."""
    f = nn.functional
    student, teacher, decoder = model.net.encoder, model.aux["teacher_encoder"], model.aux["decoder"]

    def encode(encoder: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, tuple]:
        a = f.relu(f.conv2d(x, encoder.conv1.weight, encoder.conv1.bias, padding=1))
        pa, ia = f.max_pool2d(a, 2, return_indices=True)
        b = f.relu(f.conv2d(pa, encoder.conv2.weight, encoder.conv2.bias, padding=1))
        pb, ib = f.max_pool2d(b, 2, return_indices=True)
        return pb, (ia, a.shape, ib, b.shape)

    def kl(target: torch.Tensor, feature: torch.Tensor) -> torch.Tensor:
        return f.kl_div(torch.log_softmax(feature, 1), torch.softmax(target, 1), reduction="none").mean()

    target, _ = encode(teacher, model.normalize(x_clean))
    feature, (ia, sa, ib, sb) = encode(student, model.normalize(x_adv))
    up = f.max_unpool2d(feature, ib, 2, output_size=sb[-2:])
    up = f.max_unpool2d(f.conv_transpose2d(up, decoder.dec2.weight, decoder.dec2.bias, padding=1), ia, 2,
                        output_size=sa[-2:])
    regenerated = f.conv_transpose2d(up, decoder.dec4.weight, decoder.dec4.bias, padding=1)
    return kl(target, feature), kl(target, encode(teacher, model.normalize(regenerated))[0])


def test_consistency_terms_equal_an_independent_computation() -> None:
    """AC and CC against :func:`_independent_consistency`: catches a wrong reduction, target, or the teacher's
    (clean) pooling indices used to decode the student's feature."""
    model = _mid_classifier(dtype=torch.float64)
    parts = MidModules.of(model)
    tasks, y = _tasks(4, 1, torch.float64)
    target = channel_log_softmax(parts.teacher_encoder(parts.normalize(tasks[0]))).detach()

    def encode(x: torch.Tensor) -> tuple[torch.Tensor, object]:
        return parts.student_encoder(x, return_context=True)

    terms = task_loss(encode, tasks[1], y, target, parts.normalize, parts.teacher_encoder, parts.decoder,
                      parts.head, ConsistencyWeights())
    adversarial, cyclic = _independent_consistency(model, tasks[0], tasks[1])
    assert float(terms.adversarial.detach()) == pytest.approx(float(adversarial.detach()), rel=1e-10)
    assert float(terms.cyclic.detach()) == pytest.approx(float(cyclic.detach()), rel=1e-10)


def test_task_loss_terms_are_finite_and_weights_switch_terms_off() -> None:
    model = _mid_classifier()
    parts = MidModules.of(model)
    tasks, y = _tasks(4, 1)
    target = channel_log_softmax(parts.teacher_encoder(parts.normalize(tasks[0]))).detach()

    def encode(x: torch.Tensor) -> tuple[torch.Tensor, object]:
        return parts.student_encoder(x, return_context=True)

    full = task_loss(encode, tasks[1], y, target, parts.normalize, parts.teacher_encoder, parts.decoder,
                     parts.head, ConsistencyWeights())
    for term in (full.label, full.adversarial, full.cyclic):
        assert math.isfinite(float(term.detach())) and float(term.detach()) > 0
    assert torch.allclose(full.label, nn.functional.cross_entropy(model(tasks[1]), y))
    only_label = task_loss(encode, tasks[1], y, target, parts.normalize, parts.teacher_encoder, parts.decoder,
                           parts.head, ConsistencyWeights(1.0, 0.0, 0.0))
    assert float(only_label.cyclic) == 0 and float(only_label.adversarial) == 0
    assert ConsistencyWeights(1.0, 0.0, 0.8).meta_test() == ConsistencyWeights(1.0, 0.0, 1.0)


# --- the meta step --------------------------------------------------------------------------------------------


def _objective(parts: MidModules, tasks: list[torch.Tensor], y: torch.Tensor, held_out: int,
               settings: MetaSettings, flat: torch.Tensor, second_order: bool) -> torch.Tensor:
    """Hand-built L_tr(θ) + L_te(θ − α∇L_tr(θ)) for a flat parameter vector (differentiable in ``flat``)."""
    from torch.func import functional_call

    names = [name for name, _ in parts.student_encoder.named_parameters()]
    shapes = [p.shape for _, p in parts.student_encoder.named_parameters()]
    pieces = dict(zip(names, torch.split(flat, [s.numel() for s in shapes]), strict=True))
    params = {name: pieces[name].view(shape) for name, shape in zip(names, shapes, strict=True)}
    target = channel_log_softmax(parts.teacher_encoder(parts.normalize(tasks[0]))).detach()

    def loss(at: dict[str, torch.Tensor], index: int, weights: ConsistencyWeights) -> torch.Tensor:
        def encode(x: torch.Tensor) -> tuple[torch.Tensor, object]:
            return functional_call(parts.student_encoder, at, (x,), {"return_context": True})
        return task_loss(encode, tasks[index], y, target, parts.normalize, parts.teacher_encoder, parts.decoder,
                         parts.head, weights).weighted(weights)

    weights = settings.weights
    meta_train = sum(loss(params, j, weights) for j in range(len(tasks)) if j != held_out)
    grads = torch.autograd.grad(meta_train, list(params.values()), create_graph=second_order, retain_graph=True)
    fast = {name: p - settings.inner_lr * (g if second_order else g.detach())
            for (name, p), g in zip(params.items(), grads, strict=True)}
    return meta_train + loss(fast, held_out, weights.meta_test())


@pytest.mark.parametrize("first_order", [False, True], ids=["second-order", "first-order"])
def test_meta_gradient_matches_finite_differences(first_order: bool) -> None:
    """∂(L_tr(θ) + L_te(θ'))/∂θ from meta_step equals central finite differences of the hand-built objective
    (second-order), or the hand-built first-order gradient ∇L_tr(θ) + ∇_θ' L_te(θ'); a large α makes the
    second-order term big enough to tell the two apart. Float64 throughout."""
    model = _mid_classifier(dtype=torch.float64)
    parts = MidModules.of(model)
    tasks, y = _tasks(3, 2, torch.float64)
    settings = MetaSettings(inner_lr=0.5, first_order=first_order)
    meta_step(parts, tasks, y, held_out=2, settings=settings)
    analytic = torch.cat([p.grad.flatten() for p in parts.student_encoder.parameters()])
    assert analytic.abs().sum() > 0

    flat = torch.cat([p.detach().flatten() for p in parts.student_encoder.parameters()])
    probe = flat.clone().requires_grad_()
    (expected,) = torch.autograd.grad(_objective(parts, tasks, y, 2, settings, probe, not first_order), probe)
    assert torch.allclose(analytic, expected, rtol=1e-6, atol=1e-9)
    if first_order:
        return
    generator = torch.Generator().manual_seed(3)
    for _ in range(3):  # directional derivatives along random directions
        direction = torch.randn(flat.shape, generator=generator, dtype=torch.float64)
        direction /= direction.norm()
        # small h: ReLU and max-pool are piecewise linear, and a larger step may cross a kink
        h = 1e-6
        plus = _objective(parts, tasks, y, 2, settings, (flat + h * direction).requires_grad_(), True)
        minus = _objective(parts, tasks, y, 2, settings, (flat - h * direction).requires_grad_(), True)
        numeric = float((plus - minus).detach()) / (2 * h)
        assert float(analytic @ direction) == pytest.approx(numeric, rel=1e-4, abs=1e-7)


def test_second_order_term_is_present_and_meta_test_reaches_the_student() -> None:
    """Fault 1 of the release: the meta-test gradient must reach θ. The step's gradient differs from the
    meta-train gradient alone (∂L_te/∂θ ≠ 0), and second-order differs from first-order (the Hessian term)."""
    model = _mid_classifier(dtype=torch.float64)
    parts = MidModules.of(model)
    tasks, y = _tasks(3, 2, torch.float64)
    grads = {}
    for first_order in (False, True):
        for p in parts.student_encoder.parameters():
            p.grad = None
        meta_step(parts, tasks, y, held_out=1, settings=MetaSettings(inner_lr=0.5, first_order=first_order))
        grads[first_order] = torch.cat([p.grad.flatten() for p in parts.student_encoder.parameters()])
    meta_train_only = _meta_train_gradient(parts, tasks, y, held_out=1)
    assert (grads[True] - meta_train_only).abs().max() > 1e-6
    assert (grads[False] - grads[True]).abs().max() > 1e-8


def _meta_train_gradient(parts: MidModules, tasks: list[torch.Tensor], y: torch.Tensor, held_out: int
                         ) -> torch.Tensor:
    target = channel_log_softmax(parts.teacher_encoder(parts.normalize(tasks[0]))).detach()

    def encode(x: torch.Tensor) -> tuple[torch.Tensor, object]:
        return parts.student_encoder(x, return_context=True)

    weights = ConsistencyWeights()
    total = sum(task_loss(encode, tasks[j], y, target, parts.normalize, parts.teacher_encoder, parts.decoder,
                          parts.head, weights).weighted(weights) for j in range(len(tasks)) if j != held_out)
    grads = torch.autograd.grad(total, list(parts.student_encoder.parameters()))
    return torch.cat([g.flatten() for g in grads])


def test_the_inner_step_is_reported_relative_to_the_parameters() -> None:
    """MetaStepResult.inner_step is ‖θ' − θ‖ / ‖θ‖ = α ‖∇L_tr(θ)‖ / ‖θ‖: the meta-train gradient, computed by hand,
    times α, so it is proportional to α at a fixed θ; no inner step, no figure, without meta."""
    model = _mid_classifier(dtype=torch.float64)
    parts = MidModules.of(model)
    tasks, y = _tasks(3, 2, torch.float64)
    theta = torch.cat([p.detach().flatten() for p in parts.student_encoder.parameters()])
    gradient = _meta_train_gradient(parts, tasks, y, 2)
    steps = {}
    for alpha in (1e-4, 1e-1):
        for parameter in parts.student_encoder.parameters():
            parameter.grad = None
        steps[alpha] = meta_step(parts, tasks, y, held_out=2, settings=MetaSettings(inner_lr=alpha)).inner_step
        assert steps[alpha] == pytest.approx(alpha * float(gradient.norm() / theta.norm()), rel=1e-9)
    assert steps[1e-1] == pytest.approx(1e3 * steps[1e-4], rel=1e-9)
    assert meta_step(parts, tasks, y, held_out=None, settings=MetaSettings(meta=False)).inner_step is None


@pytest.mark.parametrize("held_out", [1, 2, 3])
def test_meta_test_uses_the_held_out_task(held_out: int) -> None:
    """Fault 2 of the release (the meta-test ran on the last attack): L_te is the held-out task's loss at θ'."""
    from torch.func import functional_call

    model = _mid_classifier(dtype=torch.float64)
    parts = MidModules.of(model)
    tasks, y = _tasks(3, 3, torch.float64)
    settings = MetaSettings(inner_lr=0.5, first_order=True)
    result = meta_step(parts, tasks, y, held_out, settings)
    assert result.held_out == held_out
    inner = _meta_train_gradient(parts, tasks, y, held_out)
    params = dict(parts.student_encoder.named_parameters())
    sizes = [p.numel() for p in params.values()]
    fast = {name: p.detach() - 0.5 * g.view(p.shape)
            for (name, p), g in zip(params.items(), torch.split(inner, sizes), strict=True)}
    target = channel_log_softmax(parts.teacher_encoder(parts.normalize(tasks[0]))).detach()

    def encode(x: torch.Tensor) -> tuple[torch.Tensor, object]:
        return functional_call(parts.student_encoder, fast, (x,), {"return_context": True})

    expected = task_loss(encode, tasks[held_out], y, target, parts.normalize, parts.teacher_encoder,
                         parts.decoder, parts.head, ConsistencyWeights(1, 1, 1)).weighted(ConsistencyWeights(1, 1, 1))
    assert float(result.meta_test) == pytest.approx(float(expected), rel=1e-9)


def test_meta_step_rejects_the_clean_task_as_held_out_unless_asked() -> None:
    parts = MidModules.of(_mid_classifier())
    tasks, y = _tasks(2, 2)
    with pytest.raises(ValueError, match="held-out"):
        meta_step(parts, tasks, y, held_out=0, settings=MetaSettings())
    result = meta_step(parts, tasks, y, held_out=0, settings=MetaSettings(clean_can_be_held_out=True))
    assert result.held_out == 0 and math.isfinite(float(result.meta_test))


@pytest.mark.parametrize("clean", [False, True], ids=["attacks-only", "clean-too"])
def test_held_out_task_is_drawn_uniformly(clean: bool) -> None:
    """4,000 draws over 4 attacks (and the clean task with ``--meta-test-clean``): each allowed task within
    ±150 of its expected count (more than 5 standard deviations of a binomial), no other task ever. A sampler
    stuck on one task, or one that draws the clean task by default, fails."""
    settings = MetaSettings(clean_can_be_held_out=clean)
    generator = torch.Generator().manual_seed(0)
    draws = [settings.draw_held_out(5, generator) for _ in range(4000)]
    allowed = range(0 if clean else 1, 5)
    counts = {task: draws.count(task) for task in range(5)}
    assert set(draws) == set(allowed)
    for task in allowed:
        assert abs(counts[task] - 4000 / len(allowed)) < 150, counts


# --- pass counts ----------------------------------------------------------------------------------------------


class _Counting(nn.Module):
    """Counts examples through a module's forward and backward (a hook on its output), kwargs passed on."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module
        self.forward_passes = self.backward_passes = 0

    def forward(self, x: torch.Tensor, *args: object, **kwargs: object) -> object:
        output = self.module(x, *args, **kwargs)
        first = output[0] if isinstance(output, tuple) else output
        self.forward_passes += int(x.shape[0])
        if first.requires_grad:
            rows = int(first.shape[0])
            first.register_hook(lambda grad: setattr(self, "backward_passes", self.backward_passes + rows))
        return output


@pytest.mark.parametrize("n_attacks", [1, 2, 4])
@pytest.mark.parametrize("mode", ["second-order", "first-order", "no-meta"])
def test_passes_per_step_follow_the_formula(n_attacks: int, mode: str) -> None:
    """With n pool attacks (n + 1 tasks, the clean one included), per example and step:

    - forward: E_s n + 1 (n meta-train tasks, 1 meta-test), E_t n + 2 (+1 for the clean target), D_t and C n + 1;
    - backward through E_s, D_t, C and the gradient path of E_t: n + 1 first-order and without meta (the
      meta-train gradient is computed once and reused), 2n + 1 second-order (the Hessian-vector product
      differentiates through the n meta-train tasks' graphs once more).
    """
    model = _mid_classifier()
    plain = MidModules.of(model)
    parts = MidModules(plain.normalize, _Counting(plain.student_encoder), _Counting(plain.teacher_encoder),
                       _Counting(plain.decoder), _Counting(plain.head))
    batch = 3
    tasks, y = _tasks(batch, n_attacks)
    settings = MetaSettings(first_order=mode == "first-order", meta=mode != "no-meta")
    meta_step(parts, tasks, y, held_out=1, settings=settings)
    n = n_attacks
    backward = 2 * n + 1 if mode == "second-order" else n + 1
    assert parts.student_encoder.forward_passes == (n + 1) * batch
    assert parts.teacher_encoder.forward_passes == (n + 2) * batch
    assert parts.decoder.forward_passes == parts.head.forward_passes == (n + 1) * batch
    for module in (parts.student_encoder, parts.teacher_encoder, parts.decoder, parts.head):
        assert module.backward_passes == backward * batch, module


class _Calls(nn.Module):
    """Counts a module's forward calls (not rows): one per task, or one per batch of tasks."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module
        self.calls = 0

    def forward(self, x: torch.Tensor, *args: object, **kwargs: object) -> object:
        self.calls += 1
        return self.module(x, *args, **kwargs)


def _step_gradient(parts: MidModules, tasks: list[torch.Tensor], y: torch.Tensor, settings: MetaSettings
                   ) -> torch.Tensor:
    for p in parts.student_encoder.parameters():
        p.grad = None
    meta_step(parts, tasks, y, held_out=2, settings=settings)
    return torch.cat([p.grad.flatten() for p in parts.student_encoder.parameters()])


@pytest.mark.parametrize("mode", ["second-order", "first-order", "no-meta"])
def test_batched_tasks_give_the_per_task_gradient_in_fewer_forwards(mode: str) -> None:
    """P6: the meta-train tasks go through each module as one batch — the same gradient (float64, up to summation
    order) as one forward per task, with one student-encoder call for all meta-train tasks instead of one each."""
    n_attacks = 3
    plain = MidModules.of(_mid_classifier(dtype=torch.float64))
    tasks, y = _tasks(4, n_attacks, torch.float64)
    gradients, calls = {}, {}
    for batch_tasks in (True, False):
        parts = MidModules(plain.normalize, _Calls(plain.student_encoder), plain.teacher_encoder, plain.decoder,
                           plain.head)
        settings = MetaSettings(inner_lr=0.5, first_order=mode == "first-order", meta=mode != "no-meta",
                                batch_tasks=batch_tasks)
        gradients[batch_tasks] = _step_gradient(parts, tasks, y, settings)
        calls[batch_tasks] = parts.student_encoder.calls
    assert torch.allclose(gradients[True], gradients[False], rtol=1e-10, atol=1e-14)
    meta_test_calls = 0 if mode == "no-meta" else 1
    assert calls == {True: 1 + meta_test_calls, False: n_attacks + 1}


def test_batchnorm_in_training_mode_keeps_one_forward_per_task() -> None:
    """BatchNorm in training mode normalises with the batch's statistics, so batching tasks would change the
    objective: the step then runs one forward per task, bit-identical to ``batch_tasks=False``."""
    from midbench.mid.losses import couples_batch_rows

    torch.manual_seed(0)
    shape = (3, 32, 32)
    teacher = build_model("test-resnet-ae", 10, shape)
    attach_decoder(teacher, "test-resnet-ae", shape)
    student = build_model("test-resnet-ae", 10, shape)
    assemble_mid_classifier(student, teacher)
    plain = MidModules.of(student.double())
    plain.student_encoder.train()
    assert couples_batch_rows(plain.student_encoder)
    assert not couples_batch_rows(plain.student_encoder.eval()) and not couples_batch_rows(_mid_classifier())
    plain.student_encoder.train()
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(4, *shape, generator=generator, dtype=torch.float64)
    tasks = [x, (x + 0.1).clamp(0, 1), (x - 0.1).clamp(0, 1)]
    y = torch.randint(10, (4,), generator=generator)
    gradients, calls = {}, {}
    for batch_tasks in (True, False):
        parts = MidModules(plain.normalize, _Calls(plain.student_encoder), plain.teacher_encoder, plain.decoder,
                           plain.head)
        gradients[batch_tasks] = _step_gradient(parts, tasks, y, MetaSettings(batch_tasks=batch_tasks))
        calls[batch_tasks] = parts.student_encoder.calls
    assert torch.equal(gradients[True], gradients[False])
    assert calls == {True: 3, False: 3}


# --- end to end -----------------------------------------------------------------------------------------------

TINY = {"method": "mid", "arch": "lenet", "dataset": "mnist5k", "batch_size": 32, "n_train": 96, "val_size": 16,
        "val_pgd_steps": 1, "attack_steps": 2, "source_epochs": 1, "teacher_epochs": 1, "refresh_every": 2,
        "epochs": 2, "device": "cpu", "lr": 1e-3}


@pytest.fixture(scope="session")
def mid_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny MID run: source and teacher one epoch each, two second-order student epochs, 2-step pool."""
    out = tmp_path_factory.mktemp("mid")
    train(TrainConfig.of(**TINY), out, progress=False)
    return out


def test_mid_run_writes_the_stages_and_a_mid_checkpoint(mid_run: Path) -> None:
    meta = load_checkpoint(mid_run / "model.safetensors").metadata
    assert meta["method"] == "mid" and meta["epoch"] == 2
    assert meta["source_checkpoint"] == "source/model.safetensors"
    assert meta["teacher_checkpoint"] == "teacher/model.safetensors"
    assert load_checkpoint(mid_run / "source" / "model.safetensors").metadata["method"] == "standard"
    assert load_checkpoint(mid_run / "teacher" / "model.safetensors").metadata["method"] == "mid-teacher"
    # the pool (mid-mnist-known with --attack-steps 2) is recorded as the model's known attacks
    assert [attack["id"] for attack in meta["train_attacks"]] == ["pgd-linf", "pgd-linf-t", "mim-linf", "mim-linf-t"]
    assert all(attack["params"]["steps"] == 2 and attack["version"] == 0 for attack in meta["train_attacks"])
    params = meta["method_params"]
    assert params["meta"] is True and params["first_order"] is False and params["attack_source"] == "source"
    assert params["weights"] == {"label": 1.0, "adversarial": 1.5, "cyclic": 0.8}
    for record in (json.loads(line) for line in (mid_run / "log.jsonl").read_text().splitlines()):
        assert math.isfinite(record["loss"])
        # the epoch's mean ‖θ' − θ‖ / ‖θ‖: positive (θ has a gradient) and tiny at the release's α = 1e-4
        assert 0 < record["inner_step_relative"] < 1


def test_best_mid_epoch_is_chosen_by_pool_accuracy_under_transfer(mid_run: Path) -> None:
    """best.safetensors of MID is the first epoch with the highest held-out pool accuracy under transfer (its
    white-box PGD accuracy is about 0 in every epoch, so it cannot choose)."""
    log = [json.loads(line) for line in (mid_run / "log.jsonl").read_text().splitlines()]
    scores = [record["val_pool_transfer_acc"] for record in log]
    assert all(0 <= score <= record["val_clean_acc"] for score, record in zip(scores, log, strict=True))
    best = load_checkpoint(mid_run / "best.safetensors").metadata
    assert best["best_by"] == "val_pool_transfer_acc"
    assert best["epoch"] == 1 + scores.index(max(scores))


def test_teacher_and_head_do_not_change_in_stage_2(mid_run: Path) -> None:
    teacher = load_checkpoint(mid_run / "teacher" / "model.safetensors").state_dict
    mid = load_checkpoint(mid_run / "model.safetensors").state_dict
    for name, tensor in teacher.items():
        if name.startswith("net.head."):
            assert torch.equal(mid[name], tensor), name
        elif name.startswith("net.encoder."):
            assert torch.equal(mid["aux.teacher_encoder." + name[len("net.encoder."):]], tensor), name
            assert not torch.equal(mid[name], tensor), name  # the student is its own (random-init) encoder
        elif name.startswith("aux.decoder."):
            assert torch.equal(mid[name], tensor), name


def test_mid_checkpoint_is_one_classifier_and_keeps_its_companions(mid_run: Path, small_batch: tuple) -> None:
    from midbench.artifacts.loading import load_classifier
    from midbench.mid.parts import regenerate

    x, _ = small_batch
    classifier = load_classifier(mid_run / "model.safetensors").model.eval()
    full = load_with_aux(mid_run / "model.safetensors").model.eval()
    assert not hasattr(classifier, "aux")
    with torch.no_grad():
        assert torch.equal(classifier(x), full(x))
        parts = MidModules.of(full)
        assert torch.equal(full(x), parts.head(parts.student_encoder(x)))  # mnist5k: identity normalisation
    regenerated = regenerate(full, x)
    assert regenerated.shape == x.shape and 0 <= float(regenerated.min()) <= float(regenerated.max()) <= 1


def test_resume_in_the_middle_of_a_pool_block_gives_the_same_weights(mid_run: Path, tmp_path: Path) -> None:
    """Epoch 2 lies inside the first refresh block: the resumed run must rebuild the identical cache."""
    train(TrainConfig.of(**{**TINY, "epochs": 1}), tmp_path, progress=False)
    train(TrainConfig.of(**TINY), tmp_path, resume=True, progress=False)
    expected = load_checkpoint(mid_run / "model.safetensors").state_dict
    actual = load_checkpoint(tmp_path / "model.safetensors").state_dict
    assert expected.keys() == actual.keys()
    for name, tensor in expected.items():
        assert torch.equal(tensor, actual[name]), name


def test_given_stages_are_reused_not_retrained(mid_run: Path, tmp_path: Path) -> None:
    config = TrainConfig.of(**{**TINY, "epochs": 1, "first_order": True, "no_meta": False,
                            "source": str(mid_run / "source" / "model.safetensors"),
                            "teacher": str(mid_run / "teacher" / "model.safetensors"), "student_init": "teacher",
                            "cc_weight": 0.0})
    train(config, tmp_path, progress=False)
    assert not (tmp_path / "source").exists() and not (tmp_path / "teacher").exists()
    meta = load_checkpoint(tmp_path / "model.safetensors").metadata
    # recorded relative to the run directory (the runs lie side by side), so it leads back to the given file
    recorded = Path(meta["source_checkpoint"])
    assert not recorded.is_absolute()
    assert (tmp_path / recorded).resolve() == (mid_run / "source" / "model.safetensors").resolve()
    assert meta["method_params"]["weights"]["cyclic"] == 0.0
    assert meta["method_params"]["meta_test_weights"] == {"label": 1.0, "adversarial": 1.0, "cyclic": 0.0}
    assert meta["method_params"]["student_init"] == "teacher"


@pytest.mark.parametrize("attack_source", ["student", "teacher"])
def test_other_attack_sources_run(mid_run: Path, tmp_path: Path, attack_source: str) -> None:
    config = TrainConfig.of(**{**TINY, "epochs": 1, "n_train": 32, "attack_steps": 1, "pool": "pgd-linf,fgsm-linf",
                            "attack_source": attack_source, "no_meta": attack_source == "teacher",
                            "source": str(mid_run / "source" / "model.safetensors"),
                            "teacher": str(mid_run / "teacher" / "model.safetensors")})
    log = train(config, tmp_path, progress=False).log
    assert math.isfinite(log[-1]["loss"])
    assert load_checkpoint(tmp_path / "model.safetensors").metadata["method_params"]["attack_source"] == attack_source


def test_pool_is_crafted_on_the_source_model_and_aligned_with_the_batch(mid_run: Path, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """What the loop really does, observed: every pool craft (cache and held-out selection pool) attacks the
    *source* model, not the teacher or the student; every meta step gets, as task j ≥ 1, the attack of the very
    images of its clean task (within ε of them, per example) and not of other images; held-out tasks are
    adversarial and vary between steps."""
    import midbench.defenses.mid as mid_defense
    from midbench.mid.pool import AttackerPool

    crafted_on: list[dict[str, torch.Tensor]] = []
    original_craft = AttackerPool.craft

    def spy_craft(self: AttackerPool, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
        crafted_on.append({k: v.clone() for k, v in model.state_dict().items()})
        return original_craft(self, model, x, y)

    steps: list[tuple[int | None, float, float]] = []
    original_step = mid_defense.meta_step

    def spy_step(modules: MidModules, tasks: list[torch.Tensor], y: torch.Tensor, held_out: int | None,
                 settings: MetaSettings) -> object:
        gaps = torch.stack([(task - tasks[0]).flatten(1).abs().max(1).values for task in tasks[1:]])
        steps.append((held_out, float(gaps.max()), float(gaps.min())))
        return original_step(modules, tasks, y, held_out, settings)

    monkeypatch.setattr(AttackerPool, "craft", spy_craft)
    monkeypatch.setattr(mid_defense, "meta_step", spy_step)
    config = TrainConfig.of(**{**TINY, "epochs": 2, "n_train": 64, "refresh_every": 1,
                            "source": str(mid_run / "source" / "model.safetensors"),
                            "teacher": str(mid_run / "teacher" / "model.safetensors")})
    train(config, tmp_path, progress=False)

    source = load_checkpoint(mid_run / "source" / "model.safetensors").state_dict
    assert len(crafted_on) == 2 + 1  # the cache of each epoch, the held-out pool once
    for state in crafted_on:
        assert state.keys() == {k for k in source if not k.startswith("aux.")}
        assert all(torch.equal(state[k], source[k]) for k in state)
    assert len(steps) == 4
    assert all(held_out in (1, 2, 3, 4) for held_out, _, _ in steps)
    assert len({held_out for held_out, _, _ in steps}) > 1
    assert max(gap for _, gap, _ in steps) <= 0.3 + 1e-6   # aligned: each attack within ε of its own image
    assert min(gap for _, _, gap in steps) > 0              # and the attacks did change the images


def test_pool_cache_crafts_once_per_block_with_the_declared_passes(mid_run: Path) -> None:
    """The cache costs Σ_i passes(a_i) per example once per refresh block, and nothing inside a block."""
    from midbench.artifacts.loading import load_classifier
    from midbench.data import get_dataset, load_split
    from midbench.evaluation.counting import PassCounter
    from midbench.mid.pool import AttackerPool, PoolCache, resolve_pool

    config = TrainConfig.of(**TINY)
    pool = AttackerPool(resolve_pool(config, get_dataset("mnist5k"), config.options.get("pool")), seed=0,
                        batch_size=32)
    split = load_split("mnist5k", "train").subset(torch.arange(40))
    cache = PoolCache(pool, split, 16, torch.device("cpu"), refresh_every=2)
    source = PassCounter(load_classifier(mid_run / "source" / "model.safetensors").model)
    assert cache.ensure(1, source, seed=5)
    declared = pool.passes_per_example()
    assert declared == {"forward": 2 + 3 + 2 + 3, "backward": 2 * 4}  # targeted entries: +1 forward each
    assert source.reset() == (declared["forward"] * 40, declared["backward"] * 40)
    assert not cache.ensure(2, source, seed=5) and source.reset() == (0, 0)
    first = cache.examples.clone()
    assert cache.ensure(3, source, seed=6) and not torch.equal(first, cache.examples)
    x = split.as_float()
    assert cache.examples.shape == (4, 40, *x.shape[1:])
    assert float((cache.examples - x).abs().max()) <= 0.3 + 1e-6


def test_stage_settings_targets_and_clean_meta_test_reach_the_runs(tmp_path: Path) -> None:
    """The release recipe's per-stage settings: each stage trains with its own lr, batch size and Adam betas
    (recorded in its checkpoint), the pool's targeted attacks aim at the fixed class, and the clean task may be
    held out; all recorded in the MID checkpoint."""
    config = TrainConfig.of(**{**TINY, "epochs": 1, "n_train": 32, "attack_steps": 1, "source_lr": 2e-3,
                            "teacher_lr": 1e-4, "source_batch_size": 16, "teacher_batch_size": 8,
                            "teacher_adam_betas": "0.9,0.99", "pool_target": "fixed:0", "meta_test_clean": True,
                            "batch_tasks": True})
    train(config, tmp_path, progress=False)
    stages = {role: load_checkpoint(tmp_path / role / "model.safetensors").metadata["config"]
              for role in ("source", "teacher")}
    assert (stages["source"]["lr"], stages["source"]["batch_size"], stages["source"]["adam_betas"]) == \
        (2e-3, 16, "0.9,0.999")
    assert (stages["teacher"]["lr"], stages["teacher"]["batch_size"], stages["teacher"]["adam_betas"]) == \
        (1e-4, 8, "0.9,0.99")
    meta = load_checkpoint(tmp_path / "model.safetensors").metadata
    targets = {attack["id"]: (attack["target"], attack["version"]) for attack in meta["train_attacks"]}
    assert targets == {"pgd-linf": (None, 0), "pgd-linf-t": ("fixed:0", 0), "mim-linf": (None, 0),
                       "mim-linf-t": ("fixed:0", 0)}
    params = meta["method_params"]
    assert params["meta_test_clean"] is True and params["pool_target"] == "fixed:0" and params["batch_tasks"] is True
    assert params["stages"]["teacher"] == {"lr": 1e-4, "batch_size": 8, "adam_betas": "0.9,0.99"}


@pytest.mark.parametrize("on", [False, True])
def test_meta_step_options_reach_the_meta_settings(on: bool) -> None:
    from midbench.data.datasets import get_dataset
    from midbench.defenses.base import build_task

    task = build_task(TrainConfig.of(**{**TINY, "meta_test_clean": on, "batch_tasks": on}), get_dataset("mnist5k"))
    assert (task.settings.clean_can_be_held_out, task.settings.batch_tasks) == (on, on)


def test_adam_betas_reach_the_optimiser() -> None:
    from midbench.training.loop import build_optimizer

    optimizer = build_optimizer(TrainConfig(adam_betas="0.5,0.99"), nn.Linear(2, 2))
    assert optimizer.param_groups[0]["betas"] == (0.5, 0.99)


@pytest.mark.parametrize(("override", "message"), [
    ({"arch": "test-cnn"}, "no MID decoder"),
    ({"attack_source": "oracle"}, "attack-source"),
    ({"refresh_every": 0}, "refresh-every"),
    ({"pool": "no-such-attack"}, "no-such-attack"),
    ({"lc_weight": 0.0, "ac_weight": 0.0, "cc_weight": 0.0}, "nothing to train"),
    ({"student_init": "imagenet"}, "student-init"),
    ({"adam_betas": "0.9"}, "adam-betas"),
    ({"teacher_adam_betas": "0.9,1.0"}, "teacher-adam-betas"),
    ({"source_lr": 0.0}, "source-lr"),
    ({"teacher_batch_size": 0}, "teacher-batch-size"),
    ({"pool_target": "class-0"}, "target policy"),
])
def test_bad_mid_options_are_one_line_usage_errors(tmp_path: Path, override: dict, message: str) -> None:
    from midbench.errors import UsageError

    with pytest.raises(UsageError, match=message):
        train(TrainConfig.of(**{**TINY, **override}), tmp_path, progress=False)


@pytest.mark.parametrize("protocol", ["transfer", "whitebox"])
def test_mid_checkpoint_evaluates_under_both_protocols(mid_run: Path, tmp_path: Path, protocol: str) -> None:
    """The pool is the known split; transfer crafts on the recorded source model without --source."""
    from midbench.evaluation.eval_config import EvalConfig
    from midbench.evaluation.runner import run_evaluation
    from midbench.evaluation.selection import AttackSelection

    run = run_evaluation(EvalConfig(checkpoint=str(mid_run / "model.safetensors"), protocol=protocol,
                                    selection=AttackSelection(known=True, attacks=("fgsm-linf",)), n_examples=16,
                                    results_dir=str(tmp_path), device="cpu"))
    result = run.result
    splits = {row.id: row.split for row in result.attacks}
    assert splits == {"pgd-linf@custom": "known", "pgd-linf-t@custom": "known", "mim-linf@custom": "known",
                      "mim-linf-t@custom": "known", "fgsm-linf@1": "unknown"}
    if protocol == "transfer":
        assert Path(result.protocol.source["path"]).resolve() == \
            (mid_run / "source" / "model.safetensors").resolve()
    else:
        assert result.protocol.source is None
    clean = result.clean_accuracy
    assert all(row.robust_accuracy <= clean + 1e-9 for row in result.attacks)


@pytest.mark.slow
def test_demo_settings_reach_90_percent_clean_test_accuracy(tmp_path: Path, mnist5k_test: object) -> None:
    """Acceptance of the MID issue: with the demo's settings (its standard model as source, 3 teacher epochs,
    3 first-order student epochs from the teacher encoder, 5-step pool) MID classifies ≥ 90% of the 1,000
    mnist5k test images correctly."""
    from midbench.artifacts.loading import load_classifier
    from midbench.bench.demo import DemoSettings, demo_configs

    configs = demo_configs(tmp_path, DemoSettings(device="cpu"))
    train(configs["standard"], tmp_path / "standard", progress=False)
    checkpoint = train(configs["mid"], tmp_path / "mid", progress=False).checkpoint
    model = load_classifier(checkpoint).model.eval()
    with torch.no_grad():
        predictions = torch.cat([model(x).argmax(1) for x in mnist5k_test.as_float().split(500)])
    assert float((predictions == mnist5k_test.labels).float().mean()) >= 0.90
    # The student starts from the teacher's encoder: stage 2 must have moved it, or this test would only be
    # checking the teacher. Three Adam epochs at lr 1e-3 move every tensor by far more than 1% of its norm.
    weights = load_checkpoint(checkpoint).state_dict
    for name in ("conv1.weight", "conv2.weight"):
        student, teacher = weights[f"net.encoder.{name}"], weights[f"aux.teacher_encoder.{name}"]
        assert float((student - teacher).norm() / teacher.norm()) > 0.01, name


@pytest.mark.filterwarnings("ignore:.*differs from the published release")
def test_mid_on_32x32_colour_data_with_batchnorm_keeps_teacher_statistics(tmp_path: Path) -> None:
    """The ResNet-18-shaped autoencoder on CIFAR-10 files written by the test: BatchNorm statistics of the
    frozen teacher encoder and decoder must not move in stage 2 (they stay in eval mode)."""
    from test_data_torchvision import write_cifar10

    write_cifar10(tmp_path / "data")
    config = TrainConfig.of(method="mid", dataset="cifar10", arch="test-resnet-ae", data_dir=str(tmp_path / "data"),
                         epochs=1, source_epochs=1, teacher_epochs=1, attack_steps=1, batch_size=8, val_size=4,
                         val_pgd_steps=1, device="cpu")
    train(config, tmp_path / "run", progress=False)
    teacher = load_checkpoint(tmp_path / "run" / "teacher" / "model.safetensors").state_dict
    mid = load_checkpoint(tmp_path / "run" / "model.safetensors").state_dict
    statistics = [name for name in teacher if name.endswith("running_mean")]
    assert statistics  # the architecture does have BatchNorm
    for name, tensor in teacher.items():
        if name.startswith("net.encoder."):
            assert torch.equal(mid["aux.teacher_encoder." + name[len("net.encoder."):]], tensor), name
        elif name.startswith(("net.head.", "aux.decoder.")):
            assert torch.equal(mid[name], tensor), name
    assert load_with_aux(tmp_path / "run" / "model.safetensors").model(torch.rand(2, 3, 32, 32)).shape == (2, 10)

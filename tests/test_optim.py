"""Sophia: its Hessian estimators against exact diagonals, its bounded update, and a quadratic it solves faster."""

import pytest
import torch

from mtbert.model.tasks import TASKS
from mtbert.train.optim import SophiaG, SophiaH, gauss_newton_bartlett, hutchinson


def mean_relative_error(estimate: torch.Tensor, exact: torch.Tensor) -> float:
    return ((estimate - exact).abs() / exact.abs()).mean().item()


def test_hutchinson_converges_to_the_true_diagonal() -> None:
    torch.manual_seed(0)
    n = 12
    diagonal = torch.linspace(1.0, 20.0, n, dtype=torch.float64)
    noise = torch.randn(n, n, dtype=torch.float64) * 0.3
    hessian = torch.diag(diagonal) + (noise + noise.T) / 2 - torch.diag(torch.diagonal((noise + noise.T) / 2))
    x = torch.nn.Parameter(torch.randn(n, dtype=torch.float64))
    samples = 2000
    total = torch.zeros(n, dtype=torch.float64)
    for _ in range(samples):
        loss = 0.5 * x @ hessian @ x + x.sum()
        total += hutchinson(loss, [x])[0].detach()
    assert mean_relative_error(total / samples, diagonal) <= 0.05
    one = hutchinson(0.5 * x @ hessian @ x, [x])[0]
    assert mean_relative_error(one, diagonal) > 0.01  # a single draw is noisy: the average is what converges


@pytest.mark.parametrize("task", ["sst", "para", "sts"])
def test_gauss_newton_bartlett_matches_the_exact_gauss_newton_diagonal(task: str) -> None:
    """A linear model on each task's loss: softmax regression (SST), logistic (Quora), least squares (STS)."""
    torch.manual_seed(1)
    batch, features = 16, 5
    outputs = {"sst": 5, "para": 1, "sts": 1}[task]
    x = torch.randn(batch, features, dtype=torch.float64)
    w = torch.nn.Parameter(torch.randn(features, outputs, dtype=torch.float64) * 0.5)
    z = (x @ w).detach()  # (B, outputs)
    # exact Gauss-Newton diagonal of the mean loss: mean_b x_bd^2 * (second derivative of the loss in the output)
    if task == "sst":
        p = z.softmax(-1)
        curvature = p * (1 - p)  # diagonal of diag(p) - p p^T: all the diagonal of J^T H J needs for w[d, c]
    elif task == "para":
        p = torch.sigmoid(z)
        curvature = p * (1 - p)
    else:
        curvature = torch.full_like(z, 2.0)  # d^2/ds^2 (s - y)^2
    exact = (x[:, :, None] ** 2 * curvature[:, None, :]).mean(0)  # (features, outputs)
    samples = 4000
    total = torch.zeros_like(exact)
    for _ in range(samples):
        out = x @ w
        out = out if task == "sst" else out.squeeze(-1)
        sampled = TASKS[task].sampled_loss(out).sum() / batch**0.5
        total += gauss_newton_bartlett(sampled, [w])[0].detach()
    assert mean_relative_error(total / samples, exact) <= 0.05


@pytest.mark.parametrize("sophia", [SophiaG, SophiaH])
def test_every_update_is_bounded_by_lr_plus_weight_decay(sophia) -> None:
    torch.manual_seed(2)
    p = torch.nn.Parameter(torch.randn(1000, dtype=torch.float64))
    lr, wd = 0.01, 0.1
    optimizer = sophia([p], lr=lr, weight_decay=wd)
    for step in range(20):
        if step % 5 == 0:  # Hessian estimates of every sign and size, zeros included
            h = torch.randn(1000, dtype=torch.float64) * 10.0 ** torch.randint(-8, 8, (1000,))
            h[:100] = 0.0
            optimizer.state[p].update(hessian=h, exp_avg=optimizer.state[p].get("exp_avg", torch.zeros_like(p)))
        p.grad = torch.randn(1000, dtype=torch.float64) * 10.0 ** torch.randint(-8, 8, (1000,))
        before = p.detach().clone()
        optimizer.step()
        move = p.detach() - before * (1 - lr * wd)  # the step without its weight decay
        assert move.abs().max().item() <= lr * (1 + 1e-5)
        assert move.abs().max().item() >= lr * 0.99  # and huge gradients with small curvature take it whole


def test_hessian_estimate_is_an_ema_refreshed_every_hess_interval_steps() -> None:
    a = torch.tensor([1.0, 4.0, 9.0])
    x = torch.nn.Parameter(torch.ones(3))
    optimizer = SophiaH([x], lr=0.1, betas=(0.9, 0.5), hess_interval=3)
    refreshed = []
    for _ in range(7):
        loss = 0.5 * (a * x * x).sum()
        refreshed.append(optimizer.hessian_due())
        if optimizer.hessian_due():
            optimizer.update_hessian(loss)  # on a diagonal quadratic u * (A u) = diag(A) exactly
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert refreshed == [True, False, False, True, False, False, True]
    torch.testing.assert_close(optimizer.state[x]["hessian"], a * (1 - 0.5**3))


@pytest.mark.parametrize("sophia", [SophiaG, SophiaH])
def test_state_dict_round_trip_continues_identically(sophia) -> None:
    def make():
        torch.manual_seed(3)
        model = torch.nn.Linear(4, 5)
        return model, sophia(model.parameters(), lr=0.01, weight_decay=0.1, hess_interval=2)

    def train(model, optimizer, steps):
        for _ in range(steps):
            torch.manual_seed(len(optimizer.state) + optimizer.param_groups[0]["step"])
            logits = model(torch.randn(8, 4))
            loss = torch.nn.functional.cross_entropy(logits, torch.randint(0, 5, (8,)))
            if optimizer.hessian_due():
                sampled = TASKS["sst"].sampled_loss(logits).sum() / 8**0.5
                optimizer.update_hessian(sampled if sophia is SophiaG else loss)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()

    model, optimizer = make()
    train(model, optimizer, 6)
    resumed_model, resumed = make()
    train(resumed_model, resumed, 3)
    saved_model, saved = resumed_model.state_dict(), resumed.state_dict()
    resumed_model, resumed = make()
    resumed_model.load_state_dict(saved_model)
    resumed.load_state_dict(saved)
    train(resumed_model, resumed, 3)
    for a, b in zip(model.parameters(), resumed_model.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def steps_to_target(optimizer: torch.optim.Optimizer, x: torch.nn.Parameter, a: torch.Tensor, target: float) -> int:
    """Optimizer steps until 0.5 sum(a x^2) falls to `target` times its start (at most 1000)."""
    start = 0.5 * (a * x * x).sum().item()
    for step in range(1000):
        loss = 0.5 * (a * x * x).sum()
        if loss.item() <= target * start:
            return step
        if isinstance(optimizer, SophiaH) and optimizer.hessian_due():
            optimizer.update_hessian(loss)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return 1000


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sophia_beats_tuned_adamw_on_an_ill_conditioned_quadratic(seed: int) -> None:
    """Curvatures 1..1000 (condition number 1000); lr of each tuned on the same grid; both with beta1 0.9.

    Adam divides by the root mean square of past gradients, which keeps the memory of the large gradients far
    from the optimum; Sophia divides by the curvature, so near the optimum its step is a damped Newton step.
    """
    a = torch.logspace(0, 3, 20, dtype=torch.float64)
    x0 = torch.randn(20, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    grid = [0.01, 0.03, 0.1, 0.3, 1.0]

    def best(make) -> int:
        results = []
        for lr in grid:
            x = torch.nn.Parameter(x0.clone())
            results.append(steps_to_target(make([x], lr), x, a, 1e-6))
        return min(results)

    adamw = best(lambda params, lr: torch.optim.AdamW(params, lr=lr, weight_decay=0.0))
    sophia = best(lambda params, lr: SophiaH(params, lr=lr, rho=1.0, betas=(0.9, 0.9), hess_interval=1))
    assert adamw < 1000
    assert sophia < adamw


@pytest.mark.parametrize("optimizer", ["adamw", "sophiah"])
def test_layer_lr_decay_gives_each_layer_its_learning_rate(optimizer: str) -> None:
    """--layer_lr_decay G: layer i of L trains at lr * G ** (L - 1 - i), the embeddings (and tag embeddings) at
    lr * G ** L, the pooling at lr and the heads at head_lr; G = 1 gives every parameter the plain rate."""
    from mtbert.model.encoder import BertEncoder, EncoderConfig
    from mtbert.model.multitask import MultitaskModel
    from mtbert.train.optim import build_optimizer, layer_lr_scales

    from .conftest import TINY

    cfg = EncoderConfig(**{**TINY, "num_hidden_layers": 3})
    model = MultitaskModel(BertEncoder(cfg), ("sst", "sts"), 0.0)
    model.add_tags({"pos": ["", "NN"], "ner": ["", "O"]})
    lr, head_lr, g = 1e-3, 5e-3, 0.9

    def rates(decay: float) -> dict[str, float]:
        scales = layer_lr_scales(model.encoders(), model.tags, decay)
        opt = build_optimizer(optimizer, model, model.heads, lr, head_lr, 0.01, lr_scales=scales)
        of = {id(p): group["lr"] for group in opt.param_groups for p in group["params"]}
        return {name: of[id(p)] for name, p in model.named_parameters() if p.requires_grad}

    decayed = rates(g)
    for name, rate in decayed.items():
        if name.startswith("encoder.layers."):
            i = int(name.split(".")[2])
            expected = lr * g ** (3 - 1 - i)
        elif name.startswith(("encoder.emb.", "tags.")):
            expected = lr * g**3
        elif name.startswith("heads."):
            expected = head_lr
        else:  # the attention pooling (BERT's own pooler does not train)
            expected = lr
        assert rate == pytest.approx(expected), name
    assert decayed["encoder.layers.2.attn.q.weight"] == pytest.approx(lr)  # the top layer: lr itself
    assert all(rate == (head_lr if name.startswith("heads.") else lr) for name, rate in rates(1.0).items())

"""What the training techniques compute: PCGrad's projection (--grad_surgery), SMART's smoothness term (--smart),
task sampling in the loop and cross-encoded pairs (--pair_encoding cross), on hand-made numbers and on a tiny random
model over the toy data."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from mtbert.config import Config
from mtbert.data.task_data import read_task
from mtbert.data.task_files import split_file
from mtbert.errors import MtbertError
from mtbert.fitting import fit
from mtbert.model.heads import CrossPairHead
from mtbert.model.multitask import join_pairs, segments
from mtbert.model.tasks import TASKS
from mtbert.model.tokenizer import Tokenizer, pad_batch
from mtbert.train.setup import setup_model
from mtbert.train.smart import Smart
from mtbert.train.step import compute_losses, forward
from mtbert.train.surgery import pcgrad_backward, project_conflicts

WEIGHTS = {"sst": 1.0, "para": 0.5, "sts": 3.0}


def test_pcgrad_leaves_gradients_that_agree_alone() -> None:
    grads = [torch.tensor([1.0, 2.0, 0.0]), torch.tensor([0.5, 0.0, 1.0]), torch.tensor([0.0, 1.0, 1.0])]
    projected = project_conflicts(grads, np.random.default_rng(0))
    for g, p in zip(grads, projected, strict=True):
        torch.testing.assert_close(p, g)  # no negative dot product: the plain sum


def test_pcgrad_removes_the_conflicting_components() -> None:
    g1, g2 = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0])  # g1 . g2 = -1
    p1, p2 = project_conflicts([g1, g2], np.random.default_rng(0))
    torch.testing.assert_close(p1, torch.tensor([0.5, 0.5]))  # g1 - (-1 / 2) g2
    torch.testing.assert_close(p2, torch.tensor([0.0, 1.0]))  # g2 - (-1 / 1) g1
    assert torch.dot(p1, g2) >= 0 and torch.dot(p2, g1) >= 0
    merged = p1 + p2
    assert torch.dot(merged, g1) >= 0 and torch.dot(merged, g2) >= 0  # the step raises neither task's loss


def test_pcgrad_projected_gradients_do_not_conflict_with_any_task() -> None:
    """Random conflicting gradients of two tasks: each projected gradient has a non-negative dot product with the
    other task's gradient, and their sum with both tasks' gradients."""
    gen = torch.Generator().manual_seed(0)
    for _ in range(50):
        g1, g2 = (
            torch.randn(20, generator=gen, dtype=torch.float64),
            torch.randn(20, generator=gen, dtype=torch.float64),
        )
        p1, p2 = project_conflicts([g1, g2], np.random.default_rng(1))
        assert torch.dot(p1, g2) >= -1e-9 and torch.dot(p2, g1) >= -1e-9
        assert torch.dot(p1 + p2, g1) >= -1e-9 and torch.dot(p1 + p2, g2) >= -1e-9


def step_inputs(cfg: Config):
    torch.manual_seed(0)  # the heads' initial weights: the same whatever ran before
    model, tokenizer = setup_model(cfg)
    data = {t: read_task(split_file(cfg, t, "train"), t, tokenizer) for t in cfg.active_tasks}
    rows = {t: np.arange(4) for t in cfg.active_tasks}
    return model, data, rows


def test_pcgrad_backward_projects_the_shared_gradients_and_keeps_each_head_its_own(still_cfg: Config) -> None:
    model, data, rows = step_inputs(still_cfg)
    losses, _ = compute_losses(model, data, rows, "cpu")
    params = [p for p in model.parameters() if p.requires_grad]
    plain = {t: torch.autograd.grad(v, params, retain_graph=True, allow_unused=True) for t, v in losses.items()}
    pcgrad_backward(losses, model, np.random.default_rng(0))
    heads = {id(p): t for t, head in model.heads.items() for p in head.parameters()}
    shared, expected = [], {t: [] for t in losses}
    for i, p in enumerate(params):
        if id(p) in heads:  # a head: its task's plain gradient
            torch.testing.assert_close(p.grad, plain[heads[id(p)]][i])
        elif p.grad is not None:
            shared.append(p.grad.reshape(-1))
            for t in losses:
                g = plain[t][i]
                expected[t].append((g if g is not None else torch.zeros_like(p)).reshape(-1))
    flats = [torch.cat(expected[t]) for t in losses]
    assert min(torch.dot(a, b) for k, a in enumerate(flats) for b in flats[k + 1 :]) < 0, "the toy tasks conflict"
    merged = sum(project_conflicts(flats, np.random.default_rng(0)))
    torch.testing.assert_close(torch.cat(shared), merged)
    assert not torch.allclose(merged, sum(flats)), "the surgery changed the shared gradient"


def test_smart_term_is_zero_at_eps_zero_and_reaches_the_embeddings(still_cfg: Config) -> None:
    model, data, rows = step_inputs(still_cfg)
    model.eval()  # the same outputs twice (no dropout)
    outputs = forward(model, data, rows)
    rerun = lambda: forward(model, data, rows)  # noqa: E731
    assert Smart(1.0, 0.0, 1)(rerun, model, outputs, WEIGHTS).item() == 0.0
    term = Smart(1.0, 1e-2, 2)(rerun, model, outputs, WEIGHTS)
    assert term.item() > 0
    term.backward()
    assert model.encoder.emb.word.weight.grad.abs().sum() > 0  # through the clean outputs: the embeddings learn
    assert all(model.heads[t].parameters().__next__().grad is not None for t in ("sst", "para"))


def test_smart_perturbation_stays_within_eps_and_increases_the_divergence(still_cfg: Config) -> None:
    from mtbert.train.smart import EmbeddingNoise, divergence

    model, data, rows = step_inputs(still_cfg)
    model.eval()
    clean = {t: o.detach() for t, o in forward(model, data, rows).items()}
    eps = 1e-2
    with EmbeddingNoise(model, eps) as noise:
        before = divergence(forward(model, data, rows), clean, WEIGHTS)
        noise.ascend(torch.autograd.grad(before, noise.deltas))
        noise.rerun()
        after = divergence(forward(model, data, rows), clean, WEIGHTS)
    assert all(d.abs().max() <= eps for d in noise.deltas)
    assert after > before  # the ascent found a worse perturbation than the random start


def test_symmetric_divergences() -> None:
    a, b = torch.tensor([[1.0, 0.0, -1.0, 2.0, 0.5]]), torch.tensor([[0.0, 0.0, 0.0, 0.0, 0.0]])
    p, q = a.softmax(-1), b.softmax(-1)
    kl = lambda x, y: (x * (x / y).log()).sum()  # noqa: E731
    torch.testing.assert_close(TASKS["sst"].divergence(a, b), kl(p, q) + kl(q, p))
    x, y = torch.tensor([1.5]), torch.tensor([-0.5])
    px, py = torch.sigmoid(x), torch.sigmoid(y)
    bern = lambda s, t: s * (s / t).log() + (1 - s) * ((1 - s) / (1 - t)).log()  # noqa: E731
    torch.testing.assert_close(TASKS["para"].divergence(x, y), (bern(px, py) + bern(py, px)).mean())
    torch.testing.assert_close(TASKS["sts"].divergence(torch.tensor([3.0]), torch.tensor([1.0])), torch.tensor(4.0))


@pytest.mark.parametrize(
    "changes",
    [dict(smart=1.0, smart_eps=1e-3), dict(grad_surgery="pcgrad"), dict(task_sampling="annealed")],
    ids=["smart", "pcgrad", "annealed"],
)
def test_techniques_train_in_the_loop(still_cfg: Config, changes: dict) -> None:
    """Each technique trains through fit(): finite losses, a saved model, and other numbers than the plain run."""
    plain, changed = [], []
    fit(still_cfg, report=plain.append)
    fit(replace(still_cfg, save_dir=still_cfg.save_dir + "-2", **changes), report=changed.append)
    assert all(np.isfinite(r["train_loss"]) for r in changed)
    assert changed[-1]["train_loss"] != pytest.approx(plain[-1]["train_loss"], rel=1e-6)


def test_cross_encoding_joins_a_pair_as_bert_does(tiny_checkpoint) -> None:
    """[CLS] a [SEP] b [SEP] and its token types, as the tokenizer encodes a pair; a long pair is cut to fit."""
    tokenizer = Tokenizer.from_pretrained(tiny_checkpoint)
    first, second = ["the man plays .", "a film"], ["a dog runs in the park .", "good"]
    pairs = tokenizer(first, second)
    joined = join_pairs(tokenizer.encode_ids(first), tokenizer.encode_ids(second), limit=64)
    ids, mask = pad_batch(joined, tokenizer.pad_id)
    assert torch.equal(ids, pairs["input_ids"])
    sep = tokenizer.token_id("[SEP]")
    assert torch.equal(segments(ids, sep) * mask, pairs["token_type_ids"])
    cut = join_pairs(tokenizer.encode_ids(first), tokenizer.encode_ids(second), limit=8)
    assert [len(c) for c in cut] == [8, 6] and all(c[-1] == sep and c.count(sep) == 2 for c in cut)


def test_cross_encoded_heads_read_the_pairs_pooled_state(still_cfg: Config) -> None:
    cfg = replace(still_cfg, pair_encoding="cross")
    model, data, rows = step_inputs(cfg)
    model.eval()
    assert isinstance(model.heads["para"], CrossPairHead) and not isinstance(model.heads["sst"], CrossPairHead)
    outputs = forward(model, data, rows)
    first, second = data["sts"].rows(rows["sts"])
    ids, mask = pad_batch(join_pairs(first, second, 512), model.pad_id)
    types = segments(ids, model.sep_id)
    assert types.any()  # the second sentences have type 1
    with torch.no_grad():
        pooled = model.pool(model.encoder(ids, mask, types), mask)
        torch.testing.assert_close(outputs["sts"], model.heads["sts"](pooled), atol=1e-5, rtol=1e-5)


def test_a_cross_encoding_model_saves_loads_and_predicts(still_cfg: Config) -> None:
    import mtbert

    cfg = replace(still_cfg, pair_encoding="cross")
    history = []
    fit(cfg, report=history.append)
    folder = Path(cfg.save_dir) / "finetune-2-0.003-adamw-none-multitask"
    assert json.loads((folder / "mtbert.json").read_text())["pair_encoding"] == "cross"
    predictor = mtbert.load(folder, precision="fp32")
    best = max(history, key=lambda h: h["mean"])
    data = {t: predictor.read(t, split_file(cfg, t, "dev")) for t in cfg.active_tasks}
    assert predictor.evaluate(data)["para/accuracy"] == pytest.approx(best["para/accuracy"])
    assert 0 <= predictor.similarity([("a man plays", "the man plays")])[0] <= 5
    with pytest.raises(MtbertError, match="encodes pairs as cross: add --pair_encoding cross"):
        fit(replace(still_cfg, model=None, checkpoint=str(folder), save_dir=cfg.save_dir + "-2"))

"""--moe: a mixture of expert encoders with a soft or hard gate; the heads and the pooling stay shared."""

import copy
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from mtbert.cli import main
from mtbert.config import Config
from mtbert.fitting import fit
from mtbert.inference.saved import META, load_model
from mtbert.model.moe import MixtureOfEncoders
from mtbert.model.multitask import MultitaskModel
from mtbert.train.setup import run_name

from .conftest import encoder_batch


def mixture(tiny_encoder, gate: str = "soft", experts: int = 3) -> MixtureOfEncoders:
    moe = MixtureOfEncoders.from_encoder(tiny_encoder, experts, gate)
    torch.manual_seed(1)
    for e in moe.experts:  # experts that differ, and a gate that is not near uniform
        for p in e.parameters():
            p.data += 0.05 * torch.randn_like(p)
    torch.nn.init.normal_(moe.gate.weight, std=2.0)
    return moe.eval()


def test_gate_weights_are_a_distribution_per_sentence(tiny_encoder) -> None:
    ids, mask = encoder_batch()
    p = mixture(tiny_encoder).weights(ids, mask.bool(), None)
    assert p.shape == (13, 3) and (p >= 0).all()
    torch.testing.assert_close(p.sum(-1), torch.ones(13))


def test_hard_gate_runs_each_sentence_through_exactly_one_expert(tiny_encoder) -> None:
    moe = mixture(tiny_encoder, "hard")
    ids, mask = encoder_batch()
    with torch.no_grad():  # each expert's logit centred over the batch: the sentences split between the experts
        moe.gate.bias -= moe.weights(ids, mask.bool(), None).log().mean(0)
    rows_seen: list[int] = []
    calls = [0, 0, 0]
    for k, expert in enumerate(moe.experts):

        def count(module, args, kwargs, k=k):
            calls[k] += 1
            rows_seen.append(args[0].shape[0])

        expert.register_forward_pre_hook(count, with_kwargs=True)
    pool = lambda h, m: h[:, 0]  # noqa: E731
    out = moe(ids, mask.bool(), True, None, pool)
    top = moe.weights(ids, mask.bool(), None).argmax(-1)
    assert len(set(top.tolist())) > 1  # the batch is split between experts (else the counts below prove little)
    assert sum(rows_seen) == 13 and all(c <= 1 for c in calls)  # 13 sentences, one expert call each at most
    assert [calls[k] for k in range(3)] == [int((top == k).any()) for k in range(3)]
    for i in range(13):  # and each sentence's embedding is its own expert's
        alone = moe.experts[int(top[i])](ids[i : i + 1, : int(mask[i].sum())])[:, 0]
        torch.testing.assert_close(out[i : i + 1], alone, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("gate", ["soft", "hard"])
def test_a_mixture_of_equal_experts_gives_the_plain_models_outputs(tiny_encoder, gate: str) -> None:
    torch.manual_seed(0)
    plain = MultitaskModel(copy.deepcopy(tiny_encoder), ("sst", "para", "sts"), 0.0).eval()
    moe = MultitaskModel(MixtureOfEncoders.from_encoder(tiny_encoder, 3, gate), ("sst", "para", "sts"), 0.0).eval()
    torch.nn.init.normal_(moe.moe.gate.weight, std=2.0)  # any gate: the experts agree
    moe.pool.load_state_dict(plain.pool.state_dict())
    moe.heads.load_state_dict(plain.heads.state_dict())
    ids, mask = encoder_batch()
    seqs = [row[: int(m.sum())].tolist() for row, m in zip(ids, mask, strict=True)]
    batch = {"sst": [seqs[:5]], "para": [seqs[5:9], seqs[9:]], "sts": [seqs[9:], seqs[5:9]]}
    with torch.no_grad():
        a, b = plain(batch), moe(batch)
    for t in a:
        torch.testing.assert_close(b[t], a[t], atol=1e-5, rtol=1e-5)


def test_hard_gate_still_learns(tiny_encoder) -> None:
    """The straight-through weight: the gate gets a gradient though the forward pass only takes the argmax."""
    moe = mixture(tiny_encoder, "hard").train()
    ids, mask = encoder_batch()
    moe(ids, mask.bool(), True, None, lambda h, m: h[:, 0]).pow(2).sum().backward()
    assert moe.gate.weight.grad is not None and moe.gate.weight.grad.abs().sum() > 0


def test_the_balance_loss_is_switch_transformers_and_evens_out_the_routing(tiny_encoder) -> None:
    moe = mixture(tiny_encoder, "hard").train()
    for m in moe.modules():  # training mode (to record the routing) without dropout (to recompute it)
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
        if hasattr(m, "dropout_p"):  # attention's
            m.dropout_p = 0.0
    moe.balance = 1.0
    ids, mask = encoder_batch()
    pool = lambda h, m: h[:, 0]  # noqa: E731
    moe(ids, mask.bool(), True, None, pool)
    moe(ids[:5], mask[:5].bool(), True, None, pool)  # a step's second pass
    with torch.no_grad():
        p = torch.cat([moe.weights(ids, mask.bool(), None), moe.weights(ids[:5], mask[:5].bool(), None)])
    f = torch.bincount(p.argmax(-1), minlength=3).float() / 18
    loss = moe.balance_loss()
    torch.testing.assert_close(loss, 3 * (f * p.mean(0)).sum())
    assert moe.pending == []  # the step's routing is forgotten
    busiest = int(f.argmax())
    loss.backward()
    with torch.no_grad():  # a gradient step on the gate lowers the weight of the expert with the most sentences
        moe.gate.weight -= 0.5 * moe.gate.weight.grad
        moe.gate.bias -= 0.5 * moe.gate.bias.grad
        after = moe.weights(ids, mask.bool(), None).mean(0)
    assert after[busiest] < p[:13].mean(0)[busiest]
    moe.eval()
    moe(ids, mask.bool(), True, None, pool)
    assert moe.pending == []  # evaluation records nothing


@pytest.mark.parametrize(("gate", "balance"), [("soft", 0.0), ("hard", 0.0), ("hard", 0.1)])
def test_a_tiny_mixture_overfits_tiny_data_and_logs_its_routing(cfg: Config, gate: str, balance: float, caplog) -> None:
    history: list[dict] = []
    cfg = replace(cfg, moe=True, moe_experts=2, moe_gate=gate, moe_balance=balance)
    with caplog.at_level("INFO", logger="mtbert"):
        best = fit(cfg, report=history.append)
    assert history[-1]["train_loss"] < 0.5 * history[0]["train_loss"]
    assert best["sst/accuracy"] >= 0.75 and best["para/accuracy"] >= 0.8 and best["sts/pearson"] > 0.8
    for h in history:  # each epoch's share of sentences per expert
        assert h["expert_0_share"] + h["expert_1_share"] == pytest.approx(1)
        assert h["expert_0_weight"] + h["expert_1_weight"] == pytest.approx(1)
    assert "sentences per expert" in caplog.text
    folder = Path(cfg.save_dir) / run_name(cfg)
    assert json.loads((folder / META).read_text())["moe"] == {"experts": 2, "gate": gate}
    model, _, _ = load_model(folder)
    assert model.moe is not None and len(model.moe.experts) == 2 and model.moe.gate_mode == gate


def test_a_saved_mixture_evaluates_predicts_and_trains_on(cfg: Config, tmp_path: Path, capsys) -> None:
    cfg = replace(cfg, epochs=2, moe=True, moe_experts=2, moe_gate="hard")
    best = fit(cfg)
    folder = Path(cfg.save_dir) / run_name(cfg)
    capsys.readouterr()
    main(["evaluate", "--checkpoint", str(folder), "--data_dir", cfg.data_dir, "--precision", cfg.precision])
    assert json.loads(capsys.readouterr().out)["mean"] == pytest.approx(best["mean"])
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("a man plays guitar\ta man plays the guitar\na cat\ta dog\n")
    main(["predict", "--checkpoint", str(folder), "--task", "sts", "--input", str(pairs)])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and all(0.0 <= float(line.split(",")[1]) <= 5.0 for line in lines[1:])
    with pytest.raises(Exception, match="mixture of 2 experts: add --moe --moe_experts 2"):
        fit(replace(cfg, checkpoint=str(folder), model=None, moe=False))
    again = replace(cfg, checkpoint=str(folder), model=None, moe_gate="soft", save_dir=str(tmp_path / "again"))
    assert fit(again)["epoch"] in (1, 2)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--moe", "--moe_experts", "1"], "--moe_experts must be at least 2"),
        (["--moe", "--unpad"], "--moe works with the default passes"),
        (["--moe_gate", "top"], "--moe_gate: invalid choice"),
        (["--moe_balance", "0.01"], "--moe_balance weighs a mixture of experts' routing: use it with --moe"),
    ],
)
def test_impossible_mixtures_are_refused_naming_the_flags(flags: list[str], message: str, capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(["train", *flags])
    assert e.value.code == 2 and message in capsys.readouterr().err

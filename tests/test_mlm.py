"""`mtbert pretrain`: BERT's masking, the MLM head against Hugging Face's, the written checkpoint, resuming."""

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from mtbert.cli import main
from mtbert.config import Config
from mtbert.data.masking import IGNORE, mask_tokens
from mtbert.errors import MtbertError
from mtbert.fitting import fit
from mtbert.model.hf import load_encoder, read_weights
from mtbert.model.mlm import MaskedLMHead
from mtbert.train import mlm
from mtbert.train.mlm import Pretraining, pretrain

from .conftest import TINY


def test_masking_chooses_15_percent_and_splits_them_80_10_10() -> None:
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 1000, (400, 500), generator=gen)
    maskable = torch.ones_like(ids, dtype=torch.bool)
    maskable[:, 0] = maskable[:, -1] = False  # [CLS] and [SEP]
    inputs, labels = mask_tokens(ids, maskable, mask_id=3, vocab_size=1000, generator=gen)
    chosen = labels != IGNORE
    assert not chosen[:, 0].any() and not chosen[:, -1].any()
    assert chosen.float().sum() / maskable.sum() == pytest.approx(0.15, abs=0.003)
    assert torch.equal(labels[chosen], ids[chosen]) and torch.equal(inputs[~chosen], ids[~chosen])
    masked = (inputs == 3) & chosen
    kept = (inputs == ids) & chosen
    replaced = chosen & ~masked & ~kept  # (a random piece equal to the original counts as kept: 1 in 1000)
    n = chosen.sum()
    assert masked.sum() / n == pytest.approx(0.8, abs=0.01)
    assert kept.sum() / n == pytest.approx(0.1, abs=0.01)
    assert replaced.sum() / n == pytest.approx(0.1, abs=0.01)


@pytest.fixture(scope="module")
def tiny_mlm_checkpoint(tiny_checkpoint: Path, tmp_path_factory) -> Path:
    """The tiny checkpoint as a transformers BertForMaskedLM, with a trained-looking (random) MLM head."""
    from transformers import BertConfig, BertForMaskedLM

    folder = tmp_path_factory.mktemp("tiny-mlm")
    torch.manual_seed(1)
    model = BertForMaskedLM(BertConfig(**TINY))
    torch.nn.init.normal_(model.cls.predictions.bias, std=0.5)
    model.save_pretrained(folder)
    for name in ("vocab.txt", "tokenizer_config.json"):
        shutil.copy(tiny_checkpoint / name, folder / name)
    return folder


def hf_logits(folder: Path, ids: torch.Tensor) -> torch.Tensor:
    from transformers import BertForMaskedLM

    model = BertForMaskedLM.from_pretrained(folder).eval()
    with torch.no_grad():
        return model(input_ids=ids).logits


def our_logits(folder: Path, ids: torch.Tensor) -> torch.Tensor:
    encoder = load_encoder(folder)
    head = MaskedLMHead(encoder)
    assert head.load_hf(read_weights(folder))
    with torch.no_grad():
        return head(encoder(ids))


def test_the_checkpoints_mlm_head_gives_hugging_faces_logits(tiny_mlm_checkpoint: Path) -> None:
    ids = torch.randint(5, TINY["vocab_size"], (3, 9), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(our_logits(tiny_mlm_checkpoint, ids), hf_logits(tiny_mlm_checkpoint, ids))


def test_a_checkpoint_without_a_head_gets_one_tied_to_the_word_embeddings(tiny_checkpoint: Path) -> None:
    encoder = load_encoder(tiny_checkpoint)
    head = MaskedLMHead(encoder)
    assert not head.load_hf(read_weights(tiny_checkpoint))
    assert head.word.weight is encoder.emb.word.weight


def settings(tmp_path: Path, toy_data: Path, checkpoint: Path, **changes) -> Pretraining:
    settings = dict(batch_size=4, lr=1e-3, precision="fp32")
    return Pretraining(
        model=str(checkpoint), out=str(tmp_path / "pretrained"), data_dir=str(toy_data), **(settings | changes)
    )


@pytest.mark.slow
def test_pretrain_writes_a_checkpoint_that_training_and_transformers_load(
    tmp_path: Path, toy_data: Path, tiny_mlm_checkpoint: Path, cfg: Config
) -> None:
    text = tmp_path / "more.txt"
    text.write_text("the film was good\n\nthe man plays\n", encoding="utf-8")
    p = settings(tmp_path, toy_data, tiny_mlm_checkpoint, epochs=20, text=str(text), mask_prob=0.5, lr=5e-3)
    sentences = mlm.sentences_of(p)
    assert "the film was good" in sentences and len(sentences) == len(set(sentences))
    out = pretrain(p)
    meta = json.loads((out / "mtbert_pretrain.json").read_text())
    assert meta["sentences"] == len(sentences) and meta["steps"] == 20 * -(-len(sentences) // 4)
    assert meta["epoch_losses"][-1] < meta["epoch_losses"][0] - 0.5  # it learned the toy sentences
    assert not mlm.state_dir(out).exists()  # the state goes once the checkpoint is written
    ids = torch.randint(5, TINY["vocab_size"], (2, 7), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(our_logits(out, ids), hf_logits(out, ids))  # the head, saved under HF's names
    assert not torch.allclose(our_logits(out, ids), our_logits(tiny_mlm_checkpoint, ids))
    best = fit(replace(cfg, model=str(out), epochs=1))
    assert 0 <= best["mean"] <= 1
    with pytest.raises(MtbertError, match="exists; give a new folder"):
        pretrain(p)


def test_a_stopped_pretraining_continues_to_the_same_weights(
    tmp_path: Path, toy_data: Path, tiny_checkpoint: Path, monkeypatch
) -> None:
    whole = pretrain(settings(tmp_path / "whole", toy_data, tiny_checkpoint, epochs=2, save_every=3))
    p = settings(tmp_path / "stopped", toy_data, tiny_checkpoint, epochs=2, save_every=3)
    calls, step = [0], torch.optim.AdamW.step

    def stop_at_seven(self, *args, **kwargs):
        calls[0] += 1
        if calls[0] == 7:
            raise KeyboardInterrupt
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", stop_at_seven)
    with pytest.raises(KeyboardInterrupt):
        pretrain(p)
    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    assert torch.load(mlm.state_dir(Path(p.out)) / mlm.STATE, weights_only=True)["step"] == 6
    with pytest.raises(MtbertError, match="--lr"):
        pretrain(replace(p, lr=2e-3))
    out = pretrain(p)
    a, b = read_weights(whole), read_weights(out)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_pretrain_command(tmp_path: Path, toy_data: Path, tiny_checkpoint: Path, capsys) -> None:
    out = tmp_path / "pt"
    main(
        ["pretrain", "--model", str(tiny_checkpoint), "--data_dir", str(toy_data), "--out", str(out), "--tasks", "sst"]
    )
    assert f"wrote {out}" in capsys.readouterr().out and (out / "config.json").is_file()
    with pytest.raises(SystemExit) as e:
        main(["pretrain", "--tasks", "sst,nli", "--out", str(tmp_path / "x")])
    assert e.value.code == 2
    assert "--tasks sst,nli: the tasks are sst, para, sts" in capsys.readouterr().err

"""Encoders of other families than BERT (through transformers' AutoModel): tiny random RoBERTa, DeBERTa-v2 and
ELECTRA checkpoints, built from configs, train through the one loop, predict, save, load and export."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from tokenizers import Tokenizer as RustTokenizer
from tokenizers import models, normalizers, pre_tokenizers, processors

import mtbert
from mtbert.cli import main
from mtbert.errors import MtbertError
from mtbert.fitting import fit
from mtbert.inference.saved import load_model
from mtbert.model.auto import AutoEncoder
from mtbert.model.hf import load_encoder
from mtbert.model.tokenizer import Tokenizer
from mtbert.serve.export import export
from mtbert.train.setup import run_name

from .conftest import WORDS, toy_config

SIZES = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37)


def word_level(folder: Path, specials: list[str], post: processors.PostProcessor) -> dict[str, int]:
    """A lower-casing word-level tokenizer.json of the test words, its special tokens first."""
    vocab = {w: i for i, w in enumerate(dict.fromkeys(specials + WORDS + [".", ",", "?", "'", "s"]))}
    tok = RustTokenizer(models.WordLevel(vocab, unk_token=specials[1]))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = post
    tok.save(str(folder / "tokenizer.json"))
    return vocab


def roberta(folder: Path) -> Path:
    folder.mkdir(exist_ok=True)
    specials = ["<pad>", "<unk>", "<s>", "</s>", "<mask>"]
    vocab = word_level(folder, specials, processors.RobertaProcessing(("</s>", 3), ("<s>", 2)))
    tokens = {"cls_token": "<s>", "sep_token": "</s>", "pad_token": "<pad>", "mask_token": "<mask>"}
    (folder / "tokenizer_config.json").write_text(json.dumps(tokens))
    config = transformers.RobertaConfig(
        vocab_size=len(vocab), max_position_embeddings=66, type_vocab_size=1, pad_token_id=0, **SIZES
    )
    transformers.RobertaModel(config).save_pretrained(folder)
    return folder


def deberta(folder: Path) -> Path:
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    template = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    vocab = word_level(folder, specials, template)
    config = transformers.DebertaV2Config(
        vocab_size=len(vocab),
        max_position_embeddings=64,
        type_vocab_size=0,
        relative_attention=True,
        position_buckets=16,
        pos_att_type=["p2c", "c2p"],
        **SIZES,
    )
    transformers.DebertaV2Model(config).save_pretrained(folder)
    return folder


def electra(folder: Path, tiny_checkpoint: Path) -> Path:
    for name in ("vocab.txt", "tokenizer_config.json"):  # ELECTRA tokenizes as BERT does
        shutil.copy(tiny_checkpoint / name, folder / name)
    config = transformers.ElectraConfig(vocab_size=99, embedding_size=16, max_position_embeddings=64, **SIZES)
    transformers.ElectraModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module", params=["roberta", "deberta-v2", "electra"])
def family(request, tmp_path_factory, tiny_checkpoint) -> Path:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp(request.param)
    if request.param == "roberta":
        return roberta(folder)
    if request.param == "deberta-v2":
        return deberta(folder)
    return electra(folder, tiny_checkpoint)


def test_the_encoder_is_transformers_own_model(family: Path) -> None:
    encoder = load_encoder(family)
    assert isinstance(encoder, AutoEncoder) and encoder.config.hidden_size == 32 and len(encoder.layers) == 2
    reference = transformers.AutoModel.from_pretrained(family).eval()
    tokenizer = Tokenizer.from_pretrained(family)
    batch = tokenizer(["the film is great", "a dull plot"])
    ours = encoder(batch["input_ids"], batch["attention_mask"])
    theirs = reference(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    torch.testing.assert_close(ours, theirs)
    # the family's own special tokens: RoBERTa's <s> a </s>, the others' [CLS] a [SEP]
    ids = tokenizer.encode_ids(["the film"])[0]
    assert ids[0] == tokenizer.token_id("[CLS]") and ids[-1] == tokenizer.token_id("[SEP]")


def test_each_family_trains_predicts_saves_and_exports(family: Path, tmp_path: Path, toy_data: Path, capsys) -> None:
    cfg = toy_config(tmp_path, toy_data, family, epochs=3)
    metrics = fit(cfg)
    folder = Path(cfg.save_dir) / run_name(cfg)
    model, tokenizer, meta = load_model(folder)
    assert isinstance(model.encoder, AutoEncoder)
    assert meta["encoder"]["family"] == json.loads((family / "config.json").read_text())["model_type"]
    # the saved model scores what its run did at its best epoch
    main(["evaluate", "--checkpoint", str(folder), "--data_dir", str(toy_data), "--precision", "fp32"])
    scored = json.loads(capsys.readouterr().out)
    for key in ("sst/accuracy", "para/accuracy", "sts/pearson"):
        assert scored[key] == pytest.approx(metrics[key], abs=1e-6)
    predictor = mtbert.load(folder, precision="fp32")
    assert all(0 <= s.label <= 4 for s in predictor.sentiment(["the film is great", "awful and boring"]))
    assert 0 <= predictor.similarity([("a man plays guitar", "a woman plays piano")])[0] <= 5
    # the exported folder is transformers' model with the trained weights: the same hidden states
    out = export(folder, tmp_path / "exported")
    theirs = transformers.AutoModel.from_pretrained(out).eval()
    batch = tokenizer(["the film is great"])
    torch.testing.assert_close(
        model.encoder(batch["input_ids"], batch["attention_mask"]),
        theirs(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state,
    )
    assert Tokenizer.from_pretrained(out).encode_ids(["the film"]) == tokenizer.encode_ids(["the film"])


def test_a_family_cross_encodes_pairs(tmp_path: Path, toy_data: Path) -> None:
    folder = roberta(tmp_path / "rob")
    cfg = toy_config(tmp_path, toy_data, folder, epochs=1, pair_encoding="cross", layer_lr_decay=0.9)
    fit(cfg)
    model, _, meta = load_model(Path(cfg.save_dir) / run_name(cfg))
    assert meta["pair_encoding"] == "cross" and model.sep_id == 3  # RoBERTa's </s>


@pytest.mark.parametrize("flag", [["--moe"], ["--unpad"], ["--graph_steps"], ["--additional_input"]])
def test_what_needs_a_bert_encoder_refuses_another_family(tmp_path, toy_data, flag, capsys) -> None:
    folder = roberta(tmp_path / "rob")
    with pytest.raises(SystemExit) as stop:
        main(["train", "--model", str(folder), "--data_dir", str(toy_data), "--save_dir", str(tmp_path), *flag])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert f"{flag[0]} needs a BERT encoder; the model is roberta" in err and "Traceback" not in err


def test_pretrain_refuses_another_family(tmp_path, toy_data) -> None:
    from mtbert.train.mlm import Pretraining, pretrain

    folder = roberta(tmp_path / "rob")
    with pytest.raises(MtbertError, match="continues BERT checkpoints; this one is roberta"):
        pretrain(Pretraining(model=str(folder), data_dir=str(toy_data), out=str(tmp_path / "p")))


def test_a_checkpoint_with_missing_encoder_weights_is_refused(tmp_path) -> None:
    folder = roberta(tmp_path / "rob")
    from safetensors.torch import load_file, save_file

    state = load_file(folder / "model.safetensors")
    save_file({k: v for k, v in state.items() if "layer.1." not in k}, folder / "model.safetensors")
    with pytest.raises(MtbertError, match="weights missing from the checkpoint"):
        load_encoder(folder)


def test_the_techniques_reach_another_family(family: Path, tmp_path: Path, toy_data: Path) -> None:
    """SMART's noise on the family's embeddings, layer-wise decay over its layers, gradient checkpointing."""
    from mtbert.train.optim import layer_lr_scales

    encoder = load_encoder(family)
    scales = layer_lr_scales([encoder], None, 0.5)
    top, embeddings = encoder.layers[-1], encoder.emb
    assert scales[id(next(top.parameters()))] == 1.0 and scales[id(next(embeddings.parameters()))] == 0.25
    cfg = toy_config(tmp_path, toy_data, family, epochs=1, smart=1.0, layer_lr_decay=0.9)
    metrics = fit(cfg.updated(activation_checkpointing=True))
    assert all(np.isfinite(v) for v in metrics.values())


def test_a_tokenizer_without_tokenizer_json_is_converted(tmp_path: Path) -> None:
    """RoBERTa's BPE files (vocab.json, merges.txt) alone: transformers converts them, with their special tokens."""
    from tokenizers import ByteLevelBPETokenizer

    folder = tmp_path / "bpe"
    folder.mkdir()
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator([" ".join(WORDS)] * 3, vocab_size=300, special_tokens=["<s>", "<pad>", "</s>", "<mask>"])
    bpe.save_model(str(folder))
    (folder / "config.json").write_text(json.dumps({"model_type": "roberta", "max_position_embeddings": 66}))
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "RobertaTokenizer"}))
    ours = Tokenizer.from_pretrained(folder)
    theirs = transformers.AutoTokenizer.from_pretrained(folder)
    texts = ["the film is great", "a dull plot, awful"]
    assert ours.encode_ids(texts) == theirs(texts)["input_ids"]
    assert ours.pad_id == theirs.pad_token_id and ours.token_id("[SEP]") == theirs.sep_token_id
    saved = tmp_path / "saved"
    saved.mkdir()
    ours.save(saved)
    assert Tokenizer.from_pretrained(saved).encode_ids(texts) == ours.encode_ids(texts)
    (folder / "merges.txt").unlink()
    (folder / "vocab.json").unlink()
    with pytest.raises(MtbertError, match="no vocab.txt or tokenizer.json"):
        Tokenizer.from_pretrained(folder)

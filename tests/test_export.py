"""`mtbert export`: the trained encoder as a Hugging Face folder that transformers loads with equal hidden states."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import BertModel, BertTokenizerFast

from mtbert.cli import main
from mtbert.fitting import fit
from mtbert.inference.saved import load_model
from mtbert.train.setup import run_name

SENTENCES = ["the film is great", "a man plays the guitar in the park", "dull"]


def test_the_exported_folder_loads_in_transformers_with_equal_hidden_states(cfg, tmp_path: Path, capsys) -> None:
    fit(cfg)
    saved = Path(cfg.save_dir) / run_name(cfg)
    out = tmp_path / "hf"
    main(["export", "--checkpoint", str(saved), "--out", str(out)])
    assert f"wrote {out}" in capsys.readouterr().out
    model, tokenizer, _ = load_model(saved)
    theirs = BertModel.from_pretrained(str(out)).eval()
    hf_tokenizer = BertTokenizerFast.from_pretrained(str(out))
    batch = tokenizer(SENTENCES)
    assert (
        hf_tokenizer(SENTENCES, padding=True, return_tensors="pt")["input_ids"].tolist() == batch["input_ids"].tolist()
    )
    with torch.no_grad():
        ours = model.encoder(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        ref = theirs(**{k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}).last_hidden_state
    real = batch["attention_mask"].bool()
    assert not torch.equal(ours, load_model_untrained_hidden(cfg, batch))  # training moved the encoder
    torch.testing.assert_close(ours[real], ref[real], atol=1e-5, rtol=1e-5)
    heads = load_file(out / "mtbert_heads.safetensors")
    assert {k.split(".")[0] for k in heads} == {"pool", "heads"}
    assert torch.equal(heads["pool.proj.weight"], model.pool.proj.weight)
    assert "AutoModel.from_pretrained" in (out / "README.md").read_text() and (out / "mtbert.json").is_file()


def load_model_untrained_hidden(cfg, batch) -> torch.Tensor:
    from mtbert.model.hf import load_encoder

    with torch.no_grad():
        return load_encoder(cfg.model).eval()(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])


def test_export_refuses_a_non_empty_folder_and_a_mixture(cfg, tmp_path: Path, capsys) -> None:
    import dataclasses

    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    moe = dataclasses.replace(cfg, moe=True, moe_experts=2, epochs=1)
    fit(moe)
    for checkpoint, out, message in [
        (Path(moe.save_dir) / run_name(moe), tmp_path / "full", "exists and is not an empty folder"),
        (Path(moe.save_dir) / run_name(moe), tmp_path / "new", "a mixture of 2 expert encoders"),
    ]:
        with pytest.raises(SystemExit) as e:
            main(["export", "--checkpoint", str(checkpoint), "--out", str(out)])
        assert e.value.code == 2 and message in capsys.readouterr().err

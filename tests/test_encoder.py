import json
import shutil

import pytest
import torch

from mtbert.errors import MtbertError
from mtbert.model.encoder import BertEncoder
from mtbert.model.hf import convert_hf_state_dict, load_encoder

from .conftest import encoder_batch


def test_shapes(tiny_encoder: BertEncoder) -> None:
    ids, mask = encoder_batch()
    hidden = tiny_encoder(ids, mask)
    assert hidden.shape == (13, 7, 32)
    assert tiny_encoder.pooler_output(hidden).shape == (13, 32)


def test_padding_does_not_change_real_tokens(tiny_encoder: BertEncoder) -> None:
    ids, mask = encoder_batch()
    padded_ids = torch.cat([ids, torch.zeros(13, 5, dtype=torch.long)], dim=1)
    padded_mask = torch.cat([mask, torch.zeros(13, 5, dtype=torch.long)], dim=1)
    a, b = tiny_encoder(ids, mask), tiny_encoder(padded_ids, padded_mask)[:, :7]
    real = mask.bool()
    torch.testing.assert_close(a[real], b[real], atol=1e-5, rtol=1e-5)


def test_eval_is_deterministic_and_train_mode_uses_dropout(tiny_encoder: BertEncoder) -> None:
    ids, mask = encoder_batch()
    torch.testing.assert_close(tiny_encoder(ids, mask), tiny_encoder(ids, mask), atol=0, rtol=0)
    tiny_encoder.train()
    assert not torch.allclose(tiny_encoder(ids, mask), tiny_encoder(ids, mask))


def test_extra_embeddings_are_added_to_the_input(tiny_encoder: BertEncoder) -> None:
    ids, mask = encoder_batch()
    zero = torch.zeros(13, 7, 32)
    torch.testing.assert_close(tiny_encoder(ids, mask, extra_embeddings=zero), tiny_encoder(ids, mask))
    assert not torch.allclose(tiny_encoder(ids, mask, extra_embeddings=torch.ones(13, 7, 32)), tiny_encoder(ids, mask))


def test_gradients_reach_every_parameter(tiny_encoder: BertEncoder) -> None:
    ids, mask = encoder_batch()
    hidden = tiny_encoder(ids, mask)
    (hidden.sum() + tiny_encoder.pooler_output(hidden).sum()).backward()
    assert all(
        p.grad is not None and p.grad.abs().sum() > 0
        for p in tiny_encoder.parameters()
        if p is not tiny_encoder.emb.word.weight
    )


def test_unknown_and_missing_keys_are_errors(tiny_checkpoint) -> None:
    from safetensors.torch import load_file

    state = load_file(tiny_checkpoint / "model.safetensors")
    with pytest.raises(MtbertError, match="unexpected weights.*encoder.layer.0.extra.weight"):
        convert_hf_state_dict({**state, "encoder.layer.0.extra.weight": torch.zeros(1)}, 2)
    del state["encoder.layer.1.output.dense.bias"]
    with pytest.raises(MtbertError, match="missing.*layers.1.ffn.down.bias"):
        convert_hf_state_dict(state, 2)


def test_bertfor_checkpoints_prefix_and_heads_are_handled(tiny_checkpoint) -> None:
    from safetensors.torch import load_file

    state = load_file(tiny_checkpoint / "model.safetensors")
    prefixed = {f"bert.{k}": v for k, v in state.items()} | {"cls.predictions.bias": torch.zeros(99)}
    converted, plain = convert_hf_state_dict(prefixed, 2), convert_hf_state_dict(state, 2)
    assert converted.keys() == plain.keys()
    assert all(torch.equal(converted[k], plain[k]) for k in plain)  # each weight under its own name, not another's
    # and each where the table puts it: the first layer's query weight is BERT's
    assert torch.equal(converted["layers.0.attn.q.weight"], state["encoder.layer.0.attention.self.query.weight"])


def test_folder_without_config_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(MtbertError, match=r"config\.json: missing"):
        load_encoder(tmp_path)
    with pytest.raises(MtbertError, match="no such checkpoint folder"):
        load_encoder(tmp_path / "nope")


def test_non_bert_config_is_a_clear_error(tmp_path, tiny_checkpoint) -> None:
    shutil.copytree(tiny_checkpoint, tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    (tmp_path / "m" / "config.json").write_text(json.dumps({**cfg, "model_type": "gpt2"}))
    with pytest.raises(MtbertError, match=r"m/config\.json: model_type 'gpt2' is not a bidirectional encoder"):
        load_encoder(tmp_path / "m")


@pytest.mark.parametrize("name", ["model.safetensors", "pytorch_model.bin"])
def test_truncated_weights_are_a_clear_error(tmp_path, tiny_checkpoint, name: str) -> None:
    folder = tmp_path / "m"
    shutil.copytree(tiny_checkpoint, folder)
    if name == "pytorch_model.bin":
        from safetensors.torch import load_file

        torch.save(load_file(folder / "model.safetensors"), folder / name)
        (folder / "model.safetensors").unlink()
    data = (folder / name).read_bytes()
    (folder / name).write_bytes(data[: len(data) // 2])
    with pytest.raises(MtbertError, match=rf"m/{name}: cannot read weights"):
        load_encoder(folder)


def test_pytorch_bin_checkpoint_loads_like_safetensors(tmp_path, tiny_checkpoint) -> None:
    from safetensors.torch import load_file

    folder = tmp_path / "m"
    shutil.copytree(tiny_checkpoint, folder)
    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    a, b = load_encoder(folder), load_encoder(tiny_checkpoint)
    ids, mask = encoder_batch()
    torch.testing.assert_close(a(ids, mask), b(ids, mask))

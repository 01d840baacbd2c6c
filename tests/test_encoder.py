import json
import shutil

import numpy as np
import pytest
import torch

from mtbert.encoder import BertEncoder, EncoderConfig, convert_hf_state_dict
from mtbert.errors import MtbertError
from mtbert.tokenizer import attention_groups, token_index

from .conftest import TINY


@pytest.fixture()
def tiny() -> BertEncoder:
    torch.manual_seed(0)
    return BertEncoder(EncoderConfig(**TINY)).eval()


def batch(B: int = 13, T: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, TINY["vocab_size"], (B, T), generator=g)
    lengths = torch.randint(2, T + 1, (B,), generator=g)
    mask = (torch.arange(T)[None, :] < lengths[:, None]).long()
    return ids * mask, mask


def test_shapes(tiny: BertEncoder) -> None:
    ids, mask = batch()
    hidden = tiny(ids, mask)
    assert hidden.shape == (13, 7, 32)
    assert tiny.pooler_output(hidden).shape == (13, 32)


def test_padding_does_not_change_real_tokens(tiny: BertEncoder) -> None:
    ids, mask = batch()
    padded_ids = torch.cat([ids, torch.zeros(13, 5, dtype=torch.long)], dim=1)
    padded_mask = torch.cat([mask, torch.zeros(13, 5, dtype=torch.long)], dim=1)
    a, b = tiny(ids, mask), tiny(padded_ids, padded_mask)[:, :7]
    real = mask.bool()
    torch.testing.assert_close(a[real], b[real], atol=1e-5, rtol=1e-5)


def test_eval_is_deterministic_and_train_mode_uses_dropout(tiny: BertEncoder) -> None:
    ids, mask = batch()
    torch.testing.assert_close(tiny(ids, mask), tiny(ids, mask), atol=0, rtol=0)
    tiny.train()
    assert not torch.allclose(tiny(ids, mask), tiny(ids, mask))


def test_extra_embeddings_are_added_to_the_input(tiny: BertEncoder) -> None:
    ids, mask = batch()
    zero = torch.zeros(13, 7, 32)
    torch.testing.assert_close(tiny(ids, mask, extra_embeddings=zero), tiny(ids, mask))
    assert not torch.allclose(tiny(ids, mask, extra_embeddings=torch.ones(13, 7, 32)), tiny(ids, mask))


def test_token_index_lists_the_real_tokens_and_fillers_up_to_a_multiple() -> None:
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 0, 0]]).numpy()
    assert token_index(mask).tolist() == [0, 1, 2, 4, 8, 9]
    assert token_index(mask, 4).tolist() == [0, 1, 2, 3, 4, 5, 8, 9]  # two fillers: the first padding positions
    assert token_index(mask, 5).tolist() == list(range(10))  # rounded up to 10, all 12 positions are capped
    assert token_index(mask, 100).tolist() == list(range(12))


def test_attention_groups_sort_sentences_by_length_into_groups_of_their_own_length() -> None:
    lengths = [3, 1, 2, 4]
    mask = (np.arange(4) < np.array(lengths)[:, None]).astype(np.int64)  # (4, 4)
    tokens, groups = attention_groups(mask, (1, 1))
    assert groups.shapes == ((2, 2), (2, 4))  # rows 1 and 2 padded to 2, rows 0 and 3 to 4
    assert groups.mask.tolist() == [True, False, True, True] + [True, True, True, False] + [True] * 4
    assert groups.slots.tolist() == [0, 2, 3, 4, 5, 6, 8, 9, 10, 11]  # the real tokens' slots
    assert tokens.tolist() == [4, 8, 9, 0, 1, 2, 12, 13, 14, 15]  # their places in the (4, 4) pass
    tokens, groups = attention_groups(mask, (1, 1), length_multiple=4, multiple=4)
    assert groups.shapes == ((2, 4), (2, 4))
    # 10 real tokens and 2 fillers, the first padding slots: row 1's positions 1 and 2
    assert sorted(tokens.tolist()) == [0, 1, 2, 4, 5, 6, 8, 9, 12, 13, 14, 15]


@pytest.mark.parametrize("multiple", [1, 8, 1000])
@pytest.mark.parametrize("shares", [None, (4, 3, 1), (1,) * 20])  # 20 groups of 13 rows: some are empty
def test_unpadded_tokens_give_the_states_and_gradients_of_the_padded_batch(
    multiple: int, shares: tuple[int, ...] | None
) -> None:
    """Encoding the real tokens alone (and fillers up to a multiple) gives the padded batch's states of the real
    tokens, zeros at the padding left out, and the same gradients (dropout off); so does attending in groups of
    sentences each padded to its own length."""
    torch.manual_seed(0)
    encoder = BertEncoder(EncoderConfig(**{**TINY, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}))
    ids, mask = batch()
    extra = torch.randn(13, 7, 32)
    if shares is None:
        tokens, unpadded = token_index(mask.numpy(), multiple), {}
    else:
        tokens, groups = attention_groups(mask.numpy(), shares, multiple=multiple)
        assert sum(rows for rows, _ in groups.shapes) == 13 and len(groups.shapes) == (3 if len(shares) == 3 else 13)
        unpadded = {"groups": groups}
    real = mask.bool()
    states, grads = [], []
    for kwargs in ({}, {"tokens": tokens, **unpadded}):
        encoder.zero_grad()
        hidden = encoder(ids, mask, extra_embeddings=extra, **kwargs)
        (hidden * real[..., None]).pow(2).sum().backward()
        states.append(hidden)
        grads.append({name: p.grad.clone() for name, p in encoder.named_parameters() if p.grad is not None})
    torch.testing.assert_close(states[1][real], states[0][real], atol=1e-5, rtol=1e-5)
    skipped = torch.ones(13 * 7, dtype=torch.bool)
    skipped[tokens] = False
    assert skipped.sum() == 13 * 7 - len(tokens) and not states[1].flatten(0, 1)[skipped].any()
    assert grads[0].keys() == grads[1].keys()
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, atol=1e-5, rtol=1e-4, msg=name)


def test_unpadded_tokens_need_the_mask(tiny: BertEncoder) -> None:
    ids, mask = batch()
    with pytest.raises(ValueError, match="attention_mask"):
        tiny(ids, tokens=token_index(mask.numpy()))


def test_gradients_reach_every_parameter(tiny: BertEncoder) -> None:
    ids, mask = batch()
    hidden = tiny(ids, mask)
    (hidden.sum() + tiny.pooler_output(hidden).sum()).backward()
    assert all(
        p.grad is not None and p.grad.abs().sum() > 0 for p in tiny.parameters() if p is not tiny.emb.word.weight
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
    converted = convert_hf_state_dict(prefixed, 2)
    assert converted.keys() == convert_hf_state_dict(state, 2).keys()


def test_folder_without_config_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(MtbertError, match=r"config\.json: missing"):
        BertEncoder.from_pretrained(tmp_path)
    with pytest.raises(MtbertError, match="no such checkpoint folder"):
        BertEncoder.from_pretrained(tmp_path / "nope")


def test_non_bert_config_is_a_clear_error(tmp_path, tiny_checkpoint) -> None:
    shutil.copytree(tiny_checkpoint, tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    (tmp_path / "m" / "config.json").write_text(json.dumps({**cfg, "model_type": "gpt2"}))
    with pytest.raises(MtbertError, match=r"m/config\.json: model_type is 'gpt2'"):
        BertEncoder.from_pretrained(tmp_path / "m")


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
        BertEncoder.from_pretrained(folder)


def test_pytorch_bin_checkpoint_loads_like_safetensors(tmp_path, tiny_checkpoint) -> None:
    from safetensors.torch import load_file

    folder = tmp_path / "m"
    shutil.copytree(tiny_checkpoint, folder)
    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    a, b = BertEncoder.from_pretrained(folder), BertEncoder.from_pretrained(tiny_checkpoint)
    ids, mask = batch()
    torch.testing.assert_close(a(ids, mask), b(ids, mask))

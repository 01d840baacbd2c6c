"""The GPU speed modes of mtbert.accel against the readable path: unpadded tokens and attention groups give the
padded encoder's states and gradients, shaped passes the embeddings of one padded pass."""

import os

import numpy as np
import pytest
import torch

import mtbert.accel.passes
from mtbert.accel.kernels import tune_kernels
from mtbert.accel.passes import PassInputs, ShapedPasses
from mtbert.accel.unpad import attention_groups, encode_unpadded, token_index
from mtbert.model.encoder import BertEncoder, EncoderConfig
from mtbert.model.multitask import MultitaskModel
from mtbert.model.tokenizer import pad_batch

from .conftest import TINY, encoder_batch


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
    ids, mask = encoder_batch()
    extra = torch.randn(13, 7, 32)
    if shares is None:
        tokens, unpadded = token_index(mask.numpy(), multiple), {}
    else:
        tokens, groups = attention_groups(mask.numpy(), shares, multiple=multiple)
        assert sum(rows for rows, _ in groups.shapes) == 13 and len(groups.shapes) == (3 if len(shares) == 3 else 13)
        unpadded = {"groups": groups}
    real = mask.bool()
    states, grads = [], []
    for unpad in (False, True):
        encoder.zero_grad()
        if unpad:
            hidden = encode_unpadded(encoder, ids, mask, tokens, extra_embeddings=extra, **unpadded)
        else:
            hidden = encoder(ids, mask, extra_embeddings=extra)
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


@pytest.mark.parametrize("unpad", [False, True])
@pytest.mark.parametrize("fixed_rows", [None, 5])
def test_compiled_pass_shapes_give_the_embeddings_of_one_padded_pass(
    fixed_rows: int | None, unpad: bool, monkeypatch
) -> None:
    """The pass shapes of a compiled encoder (ShapedPasses): lengths padded to a multiple of 16 (capped at the position
    table) and always a mask; for CUDA graphs also a fixed number of sentences, one-token fillers completing the
    last pass, and with --unpad a multiple of TOKEN_MULTIPLE tokens. The embeddings are those of one padded batch."""
    monkeypatch.setattr(mtbert.accel.passes, "TOKEN_MULTIPLE", 32)
    torch.manual_seed(0)
    model = MultitaskModel(BertEncoder(EncoderConfig(**TINY)), ("sst",), 0.0).eval()
    g = torch.Generator().manual_seed(2)
    lengths = torch.randint(2, 60, (23,), generator=g).tolist()
    sentences = [torch.randint(5, TINY["vocab_size"], (n,), generator=g).tolist() for n in lengths]
    ids, mask = pad_batch(sentences, 0)
    expected = model.pool(model.encoder(ids, mask), mask)
    shapes, tokens = [], []  # per pass: (rows, length, with a mask), and (tokens encoded, real tokens)

    # the passes of --torch_compile on (cudagraphs with fixed_rows), without compiling
    passes = ShapedPasses(200, "cudagraphs" if fixed_rows else "on", fixed_rows or 0, unpad)
    run = passes.run

    def record(model: MultitaskModel, inputs: PassInputs) -> torch.Tensor:
        shapes.append((*inputs.ids.shape, inputs.padded))
        tokens.append((len(inputs.tokens) if inputs.tokens is not None else None, int(inputs.mask.sum())))
        return run(model, inputs)

    passes.run = record
    model.passes = passes
    torch.testing.assert_close(model.embed(sentences), expected, atol=1e-5, rtol=1e-5)
    assert all(with_mask for _, _, with_mask in shapes)
    assert {length for _, length, _ in shapes} <= {16, 32, 48, 64} and shapes[-1][1] == 64  # 64 positions in TINY
    if fixed_rows:
        assert [rows for rows, _, _ in shapes] == [5, 5, 5, 5, 5]  # 23 sentences
    else:
        rows = [rows for rows, _, _ in shapes]
        assert sum(rows) == 23 and len(set(rows)) > 1  # the token budget cuts passes of fewer, longer sentences
    for (rows, length, _), (n, n_real) in zip(shapes, tokens, strict=True):
        if not unpad:
            assert n is None
        elif fixed_rows:  # CUDA graphs: real tokens and fillers, a multiple of TOKEN_MULTIPLE or the whole pass
            assert n == min(-(-n_real // 32) * 32, rows * length)
        else:
            assert n == n_real


def test_picking_the_cpu_caps_onednn_kernel_cache(monkeypatch) -> None:
    monkeypatch.delenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", raising=False)
    tune_kernels(torch.device("cpu"))
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "16"
    monkeypatch.setenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "256")  # a user's own setting wins
    tune_kernels(torch.device("cpu"))
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "256"

"""The multitask model's one encoder pass: length-sorted chunks give the same embeddings as one padded batch."""

import io
import sys

import pytest
import torch

import mtbert.model
from mtbert.encoder import BertEncoder, EncoderConfig
from mtbert.model import MultitaskModel
from mtbert.tokenizer import pad_batch

from .conftest import TINY


def test_pad_batch() -> None:
    ids, mask = pad_batch([[5, 6, 7], [8], [9, 10]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0], [9, 10, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0], [1, 1, 0]]
    assert ids.dtype == mask.dtype == torch.long


@pytest.mark.parametrize("chunk_tokens", [1, 12, 40])
def test_chunked_embeddings_equal_one_padded_pass(chunk_tokens: int) -> None:
    torch.manual_seed(0)
    model = MultitaskModel(BertEncoder(EncoderConfig(**TINY)), ("sst",), 0.0).eval()
    g = torch.Generator().manual_seed(1)
    lengths = torch.randint(2, 15, (23,), generator=g).tolist()
    sentences = [torch.randint(5, TINY["vocab_size"], (n,), generator=g).tolist() for n in lengths]
    sentences.append(list(sentences[0]))  # equal lengths: a chunk without padding, encoded without a mask
    ids, mask = pad_batch(sentences, 0)
    expected = model.pool(model.encoder(ids, mask), mask)  # (N, H), every sentence padded to the longest
    model.chunk_tokens = chunk_tokens
    torch.testing.assert_close(model.embed(sentences), expected, atol=1e-5, rtol=1e-5)


def test_progress_bar_over_the_sentences_changes_nothing(monkeypatch) -> None:
    class Terminal(io.StringIO):  # the bar shows on a terminal only, not in a log file
        def isatty(self) -> bool:
            return True

    torch.manual_seed(0)
    model = MultitaskModel(BertEncoder(EncoderConfig(**TINY)), ("sst",), 0.0).eval()
    sentences = [[5] * n for n in range(1, 30)]
    model.chunk_tokens = 40
    log, terminal = io.StringIO(), Terminal()
    for stderr in (log, terminal):
        monkeypatch.setattr(sys, "stderr", stderr)
        torch.testing.assert_close(model.embed(sentences, progress=True), model.embed(sentences))
    assert log.getvalue() == ""
    assert "encoding" in terminal.getvalue() and "/29 " in terminal.getvalue()  # total: the sentences of all passes


@pytest.mark.parametrize("unpad", [False, True])
@pytest.mark.parametrize("fixed_rows", [None, 5])
def test_compiled_pass_shapes_give_the_embeddings_of_one_padded_pass(
    fixed_rows: int | None, unpad: bool, monkeypatch
) -> None:
    """The pass shapes of a compiled encoder (set_passes): lengths padded to a multiple of 16 (capped at the position
    table) and always a mask; for CUDA graphs also a fixed number of sentences, one-token fillers completing the
    last pass, and with --unpad a multiple of TOKEN_MULTIPLE tokens. The embeddings are those of one padded batch."""
    monkeypatch.setattr(mtbert.model, "TOKEN_MULTIPLE", 32)
    torch.manual_seed(0)
    model = MultitaskModel(BertEncoder(EncoderConfig(**TINY)), ("sst",), 0.0).eval()
    g = torch.Generator().manual_seed(2)
    lengths = torch.randint(2, 60, (23,), generator=g).tolist()
    sentences = [torch.randint(5, TINY["vocab_size"], (n,), generator=g).tolist() for n in lengths]
    ids, mask = pad_batch(sentences, 0)
    expected = model.pool(model.encoder(ids, mask), mask)
    shapes, tokens = [], []  # per pass: (rows, length, with a mask), and (tokens encoded, real tokens)

    def hook(module, args, kwargs, out) -> None:
        shapes.append((*args[0].shape, args[1] is not None))
        index = kwargs["tokens"]
        tokens.append((len(index) if index is not None else None, int(args[1].sum())))

    model.encoder.register_forward_hook(hook, with_kwargs=True)
    # the pass settings that set_passes makes, without compiling
    model.chunk_tokens, model.step_sentences, model.unpad = 200, fixed_rows or 0, unpad
    model.torch_compile = "cudagraphs" if fixed_rows else "on"
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

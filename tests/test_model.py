"""The multitask model's one encoder pass: length-sorted chunks give the same embeddings as one padded batch."""

import io
import sys

import pytest
import torch

from mtbert.data.task_data import TaskData
from mtbert.inference.evaluate import outputs
from mtbert.model.encoder import BertEncoder, EncoderConfig
from mtbert.model.multitask import MultitaskModel, PaddedPasses
from mtbert.model.tokenizer import pad_batch

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
    model.passes = PaddedPasses(chunk_tokens)
    torch.testing.assert_close(model.embed(sentences), expected, atol=1e-5, rtol=1e-5)


def test_progress_bar_over_the_sentences_changes_nothing(monkeypatch) -> None:
    class Terminal(io.StringIO):  # the bar shows on a terminal only, not in a log file
        def isatty(self) -> bool:
            return True

    torch.manual_seed(0)
    model = MultitaskModel(BertEncoder(EncoderConfig(**TINY)), ("sst",), 0.0).eval()
    sentences = [[5] * n for n in range(1, 30)]
    model.passes = PaddedPasses(40)
    counted: list[int] = []
    torch.testing.assert_close(model.embed(sentences, done=counted.append), model.embed(sentences))
    assert sum(counted) == len(sentences) and len(counted) > 1  # one call per pass
    data = {"sst": TaskData("sst", None, [sentences], None)}
    log, terminal = io.StringIO(), Terminal()
    for stderr in (log, terminal):  # the bar is drawn by the caller (inference), not inside the module
        monkeypatch.setattr(sys, "stderr", stderr)
        torch.testing.assert_close(
            outputs(model, data, "fp32", progress=True)["sst"], outputs(model, data, "fp32")["sst"]
        )
    assert log.getvalue() == ""
    assert "encoding" in terminal.getvalue() and "/29 " in terminal.getvalue()  # total: the sentences of all passes

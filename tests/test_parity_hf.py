"""Our encoder against transformers.BertModel: a tiny random checkpoint and the packaged MiniLM (no downloads)."""

import pytest
import torch
from transformers import BertModel

from mtbert import Tokenizer
from mtbert.model.hf import default_checkpoint, load_encoder

SENTENCES = ["The film is great.", "A lovely, lovely movie with wonderful performances by everyone", "dull"]
PAIRS = ["Is it good?", "no", "What a boring plot, really"]


def compare(folder, ids, mask, types) -> None:
    ours = load_encoder(folder)
    theirs = BertModel.from_pretrained(str(folder)).eval()
    with torch.no_grad():
        hidden = ours(ids, mask, types)
        ref = theirs(input_ids=ids, attention_mask=mask, token_type_ids=types)
    real = mask.bool()
    assert real.sum() < real.numel(), "the batch should contain padding"
    torch.testing.assert_close(hidden[real], ref.last_hidden_state[real], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours.pooler_output(hidden), ref.pooler_output, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("pairs", [None, PAIRS], ids=["singles", "pairs-with-token-types"])
def test_tiny_random_checkpoint_matches_transformers(tiny_checkpoint, pairs) -> None:
    batch = Tokenizer.from_pretrained(tiny_checkpoint)(SENTENCES, pairs)
    if pairs is not None:
        assert batch["token_type_ids"].any()
    compare(tiny_checkpoint, batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])


@pytest.mark.parametrize("pairs", [None, PAIRS], ids=["singles", "pairs-with-token-types"])
def test_packaged_minilm_matches_transformers(pairs) -> None:
    batch = Tokenizer.from_pretrained()(SENTENCES, pairs)
    compare(default_checkpoint(), batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])

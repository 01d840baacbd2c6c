"""mtbert: one BERT encoder fine-tuned on SST-5 sentiment, Quora paraphrase and STS similarity at once."""

from mtbert.embedding import encode
from mtbert.encoder import BertEncoder, EncoderConfig
from mtbert.tokenizer import Tokenizer

__all__ = ["BertEncoder", "EncoderConfig", "Tokenizer", "encode"]

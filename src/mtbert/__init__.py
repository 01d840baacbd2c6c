"""mtbert: one BERT encoder fine-tuned on SST-5 sentiment, Quora paraphrase and STS similarity at once."""

from mtbert.config import Config
from mtbert.fitting import fit
from mtbert.model.encoder import BertEncoder, EncoderConfig
from mtbert.model.hf import load_encoder
from mtbert.model.tokenizer import Tokenizer
from mtbert.serve.embedding import encode
from mtbert.serve.predictor import Predictor, load

__all__ = ["BertEncoder", "Config", "EncoderConfig", "Tokenizer", "Predictor", "encode", "fit", "load", "load_encoder"]

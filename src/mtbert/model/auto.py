"""Encoders of other families (RoBERTa, DeBERTa-v2/v3, ELECTRA, ModernBERT, DistilBERT ...) through transformers'
AutoModel, behind the interface of mtbert's own BertEncoder: forward(ids, mask, types) -> hidden states (B, T, H),
`config` (hidden_size, num_hidden_layers, max_position_embeddings, vocab_size), `emb` (the input embeddings),
`layers` (the transformer layers, bottom to top), `pooler`, `checkpointing`.

BERT checkpoints keep to mtbert's own encoder (model/encoder.py): the readable path, and the one the GPU speed modes
of mtbert.accel rewrite."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from mtbert.errors import MtbertError

# Where each family keeps its stack of transformer layers (the first that exists is taken).
LAYER_PATHS = ("encoder.layer", "transformer.layer", "layers", "encoder.layers")


def transformers_module():
    try:
        import transformers
    except ImportError as e:
        raise MtbertError(
            "encoders other than BERT load through transformers: pip install 'mtbert[families]' (or transformers)"
        ) from e
    transformers.logging.set_verbosity_error()  # "some weights were not used" for every checkpoint with a pooler
    return transformers


@dataclass(frozen=True)
class FamilyConfig:
    """What mtbert reads of a transformers config, and the whole of it (`hf`) to rebuild the encoder from."""

    model_type: str
    hidden_size: int
    num_hidden_layers: int
    max_position_embeddings: int
    vocab_size: int
    type_vocab_size: int
    hf: dict

    def to_dict(self) -> dict:
        return {"family": self.model_type, "hf": self.hf}


class AutoEncoder(nn.Module):
    """A transformers encoder as mtbert's encoder. `extra_embeddings` (the tag embeddings) are not supported."""

    def __init__(self, hf_model: nn.Module):
        super().__init__()
        self.hf = hf_model
        c = hf_model.config
        self.config = FamilyConfig(
            model_type=c.model_type,
            hidden_size=c.hidden_size,
            num_hidden_layers=c.num_hidden_layers,
            max_position_embeddings=getattr(c, "max_position_embeddings", 512),
            vocab_size=c.vocab_size,
            type_vocab_size=getattr(c, "type_vocab_size", 0) or 0,
            hf=c.to_dict(),
        )
        accepted = inspect.signature(hf_model.forward).parameters
        # token types only where the family has more than one (RoBERTa has one, DeBERTa-v3 and DistilBERT none)
        self.takes_types = "token_type_ids" in accepted and self.config.type_vocab_size > 1
        self._checkpointing = False

    @classmethod
    def from_folder(cls, folder: Path, model_type: str) -> AutoEncoder:
        """The checkpoint in `folder`; refused where its family is no bidirectional encoder (one without a masked
        language model: GPT-2, Llama) or where weights of the encoder are missing from the files."""
        transformers = transformers_module()
        from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

        if model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
            raise MtbertError(
                f"{folder / 'config.json'}: model_type {model_type!r} is not a bidirectional encoder family "
                "(BERT, RoBERTa, DeBERTa, ELECTRA, ModernBERT, DistilBERT, ...)"
            )
        try:
            model, info = transformers.AutoModel.from_pretrained(folder, output_loading_info=True)
        except (OSError, ValueError, KeyError, RuntimeError) as e:
            raise MtbertError(f"{folder}: transformers cannot load this checkpoint ({e})") from e
        missing = [k for k in info.get("missing_keys", ()) if "pooler" not in k]
        if missing:
            raise MtbertError(f"{folder}: weights missing from the checkpoint: {', '.join(sorted(missing)[:5])}")
        return cls(model).eval()

    @classmethod
    def from_dict(cls, saved: dict) -> AutoEncoder:
        """The encoder (random weights) of a config saved by `FamilyConfig.to_dict`."""
        transformers = transformers_module()
        hf = dict(saved["hf"])
        config = transformers.AutoConfig.for_model(hf.pop("model_type", saved["family"]), **hf)
        return cls(transformers.AutoModel.from_config(config))

    @property
    def emb(self) -> nn.Module:
        return self.hf.embeddings

    @property
    def layers(self) -> nn.ModuleList:
        for path in LAYER_PATHS:
            found = self.hf
            for part in path.split("."):
                found = getattr(found, part, None)
            if isinstance(found, nn.ModuleList):
                return found
        raise MtbertError(f"{self.config.model_type}: cannot find the encoder's layers (looked for {LAYER_PATHS})")

    @property
    def pooler(self) -> nn.Module:
        """The family's [CLS] pooler where it has one (mtbert pools with attention instead)."""
        return getattr(self.hf, "pooler", None) or nn.Identity()

    @property
    def checkpointing(self) -> bool:
        return self._checkpointing

    @checkpointing.setter
    def checkpointing(self, on: bool) -> None:
        new = hasattr(self.hf, "activation_checkpointing_enable")  # transformers' name from version 5 on
        if on and new:
            self.hf.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        elif on:
            self.hf.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        elif self._checkpointing:
            (self.hf.activation_checkpointing_disable if new else self.hf.gradient_checkpointing_disable)()
        self._checkpointing = on

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        extra_embeddings: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """input_ids, attention_mask, token_type_ids: (B, T). Returns the last hidden states (B, T, H)."""
        if extra_embeddings is not None:
            raise MtbertError(
                f"--additional_input: the tag embeddings need a BERT encoder, not {self.config.model_type}"
            )
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self.takes_types and token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        return self.hf(**inputs).last_hidden_state

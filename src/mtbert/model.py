"""The multitask model: one shared encoder and attention pooling, composed with one head per task."""

from __future__ import annotations

import torch
from torch import nn
from tqdm import tqdm

from mtbert.encoder import BertEncoder
from mtbert.heads import AttentionPooling
from mtbert.tasks import TASKS
from mtbert.tokenizer import PassInputs, attention_groups, pass_inputs

# Sentences of a step are sorted by length and encoded in chunks of at most this many (padded) tokens, so that
# short sentences are not padded to the longest one of the step. Small chunks suit a CPU; a GPU, whose time goes
# to launching kernels rather than to padding, wants few large passes.
CHUNK_TOKENS = {"cpu": 1024, "cuda": 16384}
# A compiled encoder (--torch_compile) and recorded training steps (--graph_steps) get every pass with a mask and its
# length padded to a multiple of this, so that the CUDA graphs recorded are few (see MultitaskModel.pass_inputs).
LENGTH_MULTIPLE = 16
# With CUDA graphs, the unpadded tokens of a pass (--unpad) are padded to a multiple of this many, for the same reason.
TOKEN_MULTIPLE = 1024
# Recorded unpadded steps (--graph_steps --unpad, eager encoder) sort a step's sentences by length into groups of these
# shares of its rows, which attend apart, each padded to its own longest: on the CS224N data attention's T x T scores
# fall from 11.9 to 2.8 times the real ones (n x n per sentence), and a run still records about ten step shapes
# (benchmarks/padding.py).
ATTENTION_GROUPS = (4, 3, 1)


class MultitaskModel(nn.Module):
    def __init__(self, encoder: BertEncoder, tasks: tuple[str, ...], dropout: float, pad_id: int = 0):
        super().__init__()
        self.encoder = encoder
        encoder.pooler.requires_grad_(False)  # BERT's [CLS] pooler: the tasks pool with attention instead
        self.pool = AttentionPooling(encoder.config.hidden_size)
        self.heads = nn.ModuleDict({t: TASKS[t].make_head(encoder.config.hidden_size, dropout) for t in tasks})
        self.pad_id = pad_id
        self.chunk_tokens: int | None = None  # None: CHUNK_TOKENS of the device the model is on
        self.torch_compile = "off"  # see set_passes
        self.step_sentences = 0  # the sentences of one training step (see set_passes)
        self.unpad = False  # see set_passes

    @property
    def device(self) -> torch.device:
        return self.pool.proj.weight.device

    @property
    def fixed_rows(self) -> int | None:
        """Sentences per pass for CUDA graphs, which are recorded per shape: those of one training step."""
        return self.step_sentences if self.torch_compile == "cudagraphs" else None

    def token_budget(self) -> int:
        """Padded tokens per encoder pass: chunk_tokens, or the default of the device the model is on."""
        return self.chunk_tokens or CHUNK_TOKENS.get(self.device.type, CHUNK_TOKENS["cpu"])

    def set_passes(self, chunk_tokens: int | None, torch_compile: str, step_sentences: int, unpad: bool) -> None:
        """How sentences go through the encoder (--chunk_tokens, --torch_compile off|on|cudagraphs, --unpad; the
        passes of recorded training steps, --graph_steps, see pass_inputs).

        Unpadded, a pass's embeddings, linear layers, norms and dropout run on its real tokens alone, and only
        attention sees the sentences padded (see BertEncoder.forward).

        Compiled, the encoder and the pooling are two graphs each (training, inference) that trace batch size and
        length as symbols, so passes of any shape share them; passes are padded to a multiple of LENGTH_MULTIPLE
        tokens. A CUDA graph, though, is recorded for each shape it meets, and a training step must call the
        encoder's graph only once (PyTorch 2.11's CUDA graph trees fail when a compiled function is called again
        within a step while its graphs are being recorded): with cudagraphs every pass holds `step_sentences`,
        the sentences of one training step, one-token fillers completing it, whatever --chunk_tokens says."""
        self.chunk_tokens, self.torch_compile, self.step_sentences = chunk_tokens, torch_compile, step_sentences
        self.unpad = unpad
        if torch_compile == "off":
            return
        mode = "reduce-overhead" if torch_compile == "cudagraphs" else None
        # In place (parameter names unchanged): LayerNorm, dropout, residual adds, GELU and the bf16 casts become a
        # few fused kernels, forward and backward, and a pass launches them from one compiled function instead of
        # op by op; the layers' weights are inputs of the encoder's graph.
        self.encoder.compile(dynamic=True, mode=mode)
        self.pool.compile(dynamic=True, mode=mode)

    def passes(self, lengths: list[int]) -> list[list[int]]:
        """Sentence indices sorted by length and cut into encoder passes: growing each pass while (sentences x its
        longest length) stays within the token budget, or fixed_rows sentences per pass."""
        order = sorted(range(len(lengths)), key=lambda i: lengths[i])
        if self.fixed_rows:
            return [order[start : start + self.fixed_rows] for start in range(0, len(order), self.fixed_rows)]
        budget = self.token_budget()
        passes, start = [], 0
        while start < len(order):
            end = start + 1
            while end < len(order) and (end - start + 1) * lengths[order[end]] <= budget:
                end += 1
            passes.append(order[start:end])
            start = end
        return passes

    def pass_inputs(self, seqs: list[list[int]], recorded: bool = False) -> PassInputs:
        """The tensors of one pass, built on the host: its token-id lists with one-token fillers up to fixed_rows,
        padded to the longest and, unpadded, the positions to encode. Shaped for CUDA graphs, which are recorded per
        shape, when compiled (--torch_compile) or `recorded` (a training step recorded whole, step.GraphSteps): the
        length padded to a multiple of LENGTH_MULTIPLE, always with a mask, and under graphs an unpadded token count
        padded to a multiple of TOKEN_MULTIPLE. A recorded unpadded step with an eager encoder also attends in
        groups of its sentences (see ATTENTION_GROUPS); a compiled encoder would be compiled again for every
        combination of the groups' lengths."""
        compiled = self.torch_compile != "off"
        length_multiple = LENGTH_MULTIPLE if compiled or recorded else 1
        token_multiple = TOKEN_MULTIPLE if self.torch_compile == "cudagraphs" or recorded else 1
        groups = ATTENTION_GROUPS if recorded and self.unpad and not compiled else None
        if self.fixed_rows:
            seqs = seqs + [[self.pad_id]] * (self.fixed_rows - len(seqs))
        length = None
        if length_multiple > 1:
            length = -(-max(map(len, seqs)) // length_multiple) * length_multiple
            length = min(length, self.encoder.config.max_position_embeddings)
        inputs = pass_inputs(seqs, self.pad_id, length, self.unpad and groups is None, token_multiple)
        if groups is None or not inputs.padded:
            return inputs
        tokens, layout = attention_groups(inputs.mask.numpy(), groups, length_multiple, token_multiple)
        return inputs._replace(tokens=tokens, groups=layout)

    def encode(self, inputs: PassInputs) -> torch.Tensor:
        """The pooled sentence embeddings (b, H) of a pass (its tensors on the host or on the model's device)."""
        inputs = inputs.to(self.device)
        return self.pool(self.encoder.encode(inputs), inputs.mask)  # (b, T, H) -> (b, H)

    def embed(self, sentences: list[list[int]], progress: bool = False) -> torch.Tensor:
        """Sentence embeddings (N, H) of token-id lists, encoded pass by pass (see passes); output in input order.
        `progress`: a progress bar of the sentences encoded, on stderr if it is a terminal (removed when done)."""
        passes = self.passes([len(s) for s in sentences])
        graphs, pass_by_pass = self.torch_compile == "cudagraphs", not torch.is_grad_enabled()
        pooled = []
        with tqdm(
            total=len(sentences), desc="encoding", unit="sentence", disable=None if progress else True, leave=False
        ) as bar:
            for n, rows in enumerate(passes):
                if graphs and (n == 0 or pass_by_pass):
                    # a new step (or, without backward, a new pass) may reuse the memory of the last one's graph outputs
                    torch.compiler.cudagraph_mark_step_begin()
                inputs = self.pass_inputs([sentences[i] for i in rows])
                pooled.append(self.encode(inputs)[: len(rows)])  # (b', H): fillers dropped
                if graphs and pass_by_pass:
                    pooled[-1] = pooled[-1].clone()  # out of the graphs' memory, which the next pass reuses
                bar.update(len(rows))
        out = torch.cat(pooled)  # (N, H) in pass order
        order = torch.tensor([i for rows in passes for i in rows])
        inverse = torch.empty(len(order), dtype=torch.long)
        inverse[order] = torch.arange(len(order))
        return out[inverse.to(out.device)]

    def forward(self, batch: dict[str, list[list[list[int]]]], progress: bool = False) -> dict[str, torch.Tensor]:
        """batch: task -> one list of token-id lists per text column. Returns task -> head output.

        All sentences of all tasks go through the encoder in one pass, then each head reads its own.
        """
        return self.apply_heads(self.embed(batch_sentences(batch), progress), batch_sizes(batch))

    def apply_heads(self, emb: torch.Tensor, sizes: dict[str, list[int]]) -> dict[str, torch.Tensor]:
        """Task -> head output, from the embeddings (N, H) of a batch's sentences in order: task by task, text
        column by column, `sizes` the number of sentences of each column (see batch_sizes)."""
        outputs, at = {}, 0
        for task, columns in sizes.items():
            parts = []
            for n in columns:
                parts.append(emb[at : at + n])
                at += n
            outputs[task] = self.heads[task](*parts)
        return outputs


def batch_sentences(batch: dict[str, list[list[list[int]]]]) -> list[list[int]]:
    """The token-id lists of a batch's sentences in order: task by task, text column by column."""
    return [s for columns in batch.values() for column in columns for s in column]


def batch_sizes(batch: dict[str, list[list[list[int]]]]) -> dict[str, list[int]]:
    """Task -> the number of sentences in each text column of a batch."""
    return {task: [len(column) for column in columns] for task, columns in batch.items()}

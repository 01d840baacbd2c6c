"""Synthetic SST training sentences (`mtbert synth`): a label-conditioned causal language model, fitted on the SST
training sentences with the label as a control prefix, samples new sentences for each label; they pass the filters
of mtbert.data.synthetic (and, with a trained mtbert model, a confidence filter) and are written in the
ids-sst-train layout, to train on with `--sst_train ORIGINAL,GENERATED` (and `--synthetic_ratio`).

Generators (Hugging Face `transformers` causal-LM classes, the [synth] extra):
- "small" (the default, offline): a GPT-2-shaped model trained from scratch, on the word pieces of our WordPiece
  vocabulary that the SST sentences use, each label one control token;
- a local Hugging Face causal-LM folder (GPT-2 medium, as the original project used), fine-tuned the same way on
  "<label words>: <sentence>" lines;
- "api": an OpenAI-compatible chat-completions endpoint (mtbert.lab.synth_api).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from mtbert.data.files import read_examples
from mtbert.data.synthetic import LABEL_WORDS, Filtered, Row, filter_rows, write_rows
from mtbert.errors import MtbertError
from mtbert.lab.synth_config import SynthConfig
from mtbert.model.tasks import TASKS
from mtbert.model.tokenizer import Tokenizer, pad_batch

log = logging.getLogger(__name__)
MAX_TOKENS = 64  # a training sentence's word pieces, label and end included


@dataclass
class LabelledLM:
    """A causal language model with the codec of its lines: `encode(label, text)` the ids of a training line (label
    prefix, text, end), `prompt(label)` the prefix that sampling continues, `decode(ids)` the text of a sample."""

    model: torch.nn.Module
    encode: Callable[[int, str], list[int]]
    prompt: Callable[[int], list[int]]
    decode: Callable[[list[int]], str]
    eos_id: int
    pad_id: int


def small_lm(sentences: list[str], tokenizer: Tokenizer, seed: int, layers: int = 4, width: int = 256) -> LabelledLM:
    """A GPT-2-shaped model from scratch whose vocabulary is the word pieces the sentences use (a few thousand of
    the WordPiece vocabulary's 30k, so its softmax is small), [SEP] as the end and five label tokens."""
    transformers = import_transformers()
    encoded = tokenizer.encode_ids(sentences)
    pieces = sorted({i for ids in encoded for i in ids[1:-1]})  # without [CLS] and [SEP]
    pad, eos, first_label = len(pieces), len(pieces) + 1, len(pieces) + 2
    compact = {piece: n for n, piece in enumerate(pieces)}
    torch.manual_seed(seed)
    config = transformers.GPT2Config(
        vocab_size=first_label + len(LABEL_WORDS),
        n_positions=MAX_TOKENS,
        n_embd=width,
        n_layer=layers,
        n_head=4,
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=pad,
    )
    model = transformers.GPT2LMHeadModel(config)

    def encode(label: int, text: str) -> list[int]:
        ids = [compact[i] for i in tokenizer.encode_ids([text])[0][1:-1] if i in compact]
        return [first_label + label, *ids[: MAX_TOKENS - 2], eos]

    def decode(ids: list[int]) -> str:
        ids = ids[: ids.index(eos)] if eos in ids else ids
        return tokenizer.decode([pieces[i] for i in ids if i < pad])

    return LabelledLM(model, encode, lambda label: [first_label + label], decode, eos, pad)


def pretrained_lm(path: str | Path) -> LabelledLM:
    """A local Hugging Face causal-LM folder and its tokenizer, on "<label words>: <sentence>" lines."""
    transformers = import_transformers()
    folder = Path(path)
    if not (folder / "config.json").is_file():
        raise MtbertError(
            f"--generator {path}: not a Hugging Face model folder (no config.json); give a causal LM "
            "folder, `small` or `api`"
        )
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.AutoModelForCausalLM.from_pretrained(folder)
    eos = tok.eos_token_id if tok.eos_token_id is not None else tok.sep_token_id
    if eos is None:
        raise MtbertError(f"--generator {path}: its tokenizer has no end-of-text token")
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos

    def prompt(label: int) -> list[int]:
        return tok(f"{LABEL_WORDS[label]}:", add_special_tokens=False)["input_ids"]

    def encode(label: int, text: str) -> list[int]:
        ids = tok(f"{LABEL_WORDS[label]}: {text}", add_special_tokens=False)["input_ids"]
        return [*ids[: MAX_TOKENS - 1], eos]

    def decode(ids: list[int]) -> str:
        ids = ids[: ids.index(eos)] if eos in ids else ids
        return tok.decode(ids, skip_special_tokens=True).split("\n")[0].strip()

    return LabelledLM(model, encode, prompt, decode, eos, pad)


def import_transformers():
    try:
        import transformers
    except ImportError:
        raise MtbertError("mtbert synth needs Hugging Face transformers: pip install 'mtbert[synth]'") from None
    transformers.logging.set_verbosity_error()
    return transformers


def fit(lm: LabelledLM, rows: list[Row], epochs: int, lr: float, batch_size: int, seed: int) -> float:
    """Fits the model on the label-prefixed training lines (AdamW, every token predicted but the padding); returns
    the last epoch's mean loss."""
    lines = [lm.encode(label, text) for text, label in rows]
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(lm.model.parameters(), lr=lr, weight_decay=0.01)
    lm.model.train()
    steps = math.ceil(len(lines) / batch_size)
    bar = tqdm(total=epochs * steps, desc="fitting the generator", unit="step")
    mean = math.nan
    for _ in range(epochs):
        total = 0.0
        for batch in length_batches(lines, batch_size, rng):
            ids, mask = pad_batch(batch, lm.pad_id)
            loss = lm.model(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100)).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(lm.model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            total += loss.item()
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3f}")
        mean = total / steps
    bar.close()
    return mean


def length_batches(lines: list[list[int]], batch_size: int, rng: np.random.Generator) -> list[list[list[int]]]:
    """An epoch's batches in random order, each of lines of similar length (sorted within random groups of 50
    batches), so that little of a batch is padding."""
    order = rng.permutation(len(lines))
    group = 50 * batch_size
    batches = []
    for start in range(0, len(order), group):
        chunk = sorted(order[start : start + group], key=lambda i: len(lines[i]))
        batches += [[lines[i] for i in chunk[b : b + batch_size]] for b in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


@torch.inference_mode()
def sample(lm: LabelledLM, per_class: int, temperature: float, top_p: float, seed: int, batch: int = 64) -> list[Row]:
    """`per_class` sampled sentences for each label (nucleus sampling), in label order."""
    torch.manual_seed(seed)
    lm.model.eval()
    rows: list[Row] = []
    bar = tqdm(total=per_class * len(LABEL_WORDS), desc="sampling", unit="sentence")
    for label in range(len(LABEL_WORDS)):
        prompt = lm.prompt(label)
        for start in range(0, per_class, batch):
            n = min(batch, per_class - start)
            ids = torch.tensor([prompt] * n)
            out = lm.model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                do_sample=True,
                temperature=temperature,
                top_p=top_p,
                max_new_tokens=MAX_TOKENS - len(prompt),
                eos_token_id=lm.eos_id,
                pad_token_id=lm.pad_id,
            )
            rows += [(lm.decode(row[len(prompt) :].tolist()), label) for row in out]
            bar.update(n)
    bar.close()
    return rows


def confident(rows: list[Row], checkpoint: str | Path, min_confidence: float) -> tuple[list[Row], int]:
    """The rows whose label a trained mtbert model gives a probability of at least `min_confidence`, and how many
    were removed."""
    from mtbert.data.files import Examples
    from mtbert.data.task_data import task_data
    from mtbert.inference.evaluate import outputs
    from mtbert.inference.saved import load_model

    model, tokenizer, _ = load_model(checkpoint)
    if "sst" not in model.heads:
        raise MtbertError(f"--filter_checkpoint {checkpoint}: the model has no SST head")
    if model.tag_vocab is not None:
        raise MtbertError(f"--filter_checkpoint {checkpoint}: a model with tag embeddings; give one without")
    texts = [text for text, _ in rows]
    data = task_data("sst", Examples(Path("generated"), [str(i) for i in range(len(rows))], [texts], None), tokenizer)
    probabilities = torch.softmax(outputs(model, {"sst": data}, progress=True)["sst"], dim=-1)
    labels = torch.tensor([label for _, label in rows])
    keep = probabilities[torch.arange(len(rows)), labels] >= min_confidence
    return [row for row, k in zip(rows, keep.tolist(), strict=True) if k], int((~keep).sum())


@dataclass
class SynthReport:
    generated: int
    filtered: Filtered
    written: Path
    fit_seconds: float
    sample_seconds: float
    final_loss: float | None


def read_sentences(path: Path, require_labels: bool) -> list[Row]:
    spec = TASKS["sst"]
    examples = read_examples(path, spec.text_columns, spec.label_column, spec.parse_label, require_labels)
    labels = examples.labels if examples.labels is not None else np.zeros(len(examples))
    return [(text, int(label)) for text, label in zip(examples.texts[0], labels, strict=True)]


def synthesize(args: SynthConfig) -> SynthReport:
    """`mtbert synth`: generates, filters and writes (see the module's docstring)."""
    from mtbert.outputs import readable_file, writable_file

    out = writable_file("--out", args.out)
    originals = read_sentences(readable_file("--sst_train", args.train_file), require_labels=True)
    held_out = [
        text for path in args.held_out_files for text, _ in read_sentences(readable_file("--held_out", path), False)
    ]
    started = time.perf_counter()
    final_loss = None
    if args.generator == "api":
        from mtbert.lab.synth_api import generate

        rows = generate(args, originals, partial=out.with_name(out.name + ".partial"))
        fitted = started
    else:
        if args.generator == "small":
            lm = small_lm([text for text, _ in originals], Tokenizer.from_pretrained(args.model), args.seed)
        else:
            lm = pretrained_lm(args.generator)
        lr = args.lr if args.lr is not None else (1e-3 if args.generator == "small" else 5e-5)
        final_loss = fit(lm, originals, args.fit_epochs, lr, args.batch_size, args.seed)
        fitted = time.perf_counter()
        rows = sample(lm, args.per_class, args.temperature, args.top_p, args.seed)
    sampled = time.perf_counter()
    filtered = filter_rows(rows, [text for text, _ in originals], held_out, args.min_words, args.max_words)
    if args.filter_checkpoint is not None:
        filtered.kept, filtered.removed["confidence"] = confident(
            filtered.kept, args.filter_checkpoint, args.min_confidence
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    write_rows(out, filtered.kept)
    return SynthReport(len(rows), filtered, out, fitted - started, sampled - fitted, final_loss)

"""`mtbert pretrain`: continued masked-language-model training of the encoder on the tasks' own training sentences
(and any text files given), written as a Hugging Face BERT checkpoint folder that `--model` loads.

This is the encoder's objective before fine-tuning (Gururangan et al., 2020, "Don't Stop Pretraining"; Sun et al.,
2019), not a task of the multitask loop: no heads, no dev metrics, one loss. Word pieces are masked as BERT does
(data/masking.py); the head is the checkpoint's MLM head where it has one, else a new one tied to the word
embeddings (model/mlm.py). The state is saved to OUT.state every --save_every steps and at each epoch's end, and the
same command continues from it; OUT appears complete or not at all.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import math
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn
from tqdm import tqdm

from mtbert.config import check_bounds, opt
from mtbert.data.files import read_examples
from mtbert.data.masking import IGNORE, mask_tokens
from mtbert.errors import MtbertError
from mtbert.inference.precision import autocast
from mtbert.model.hf import (
    default_checkpoint,
    hf_config,
    hf_state_dict,
    load_encoder,
    read_config_json,
    read_weights,
)
from mtbert.model.hub import resolve
from mtbert.model.mlm import MaskedLMHead
from mtbert.model.tasks import TASKS
from mtbert.model.tokenizer import Tokenizer, pad_batch
from mtbert.outputs import atomic_write_bytes, readable_file, writable_dir
from mtbert.task_file import BUILTIN
from mtbert.train.distributed import pick_device

log = logging.getLogger(__name__)
STATE = "pretrain_state.pt"
# Settings a continued run may change; any other difference from the saved state's is refused.
CHANGEABLE = {"save_every", "use_gpu", "precision"}


@dataclass(frozen=True)
class Pretraining:
    model: str | None = opt(
        None, "BERT checkpoint to continue: a folder or a hub name (org/name[@revision]) (default: packaged MiniLM)"
    )
    local_files_only: bool = opt(False, "take a hub --model from the Hugging Face cache only")
    out: str = opt(
        "models/pretrained",
        "the checkpoint folder to write (new): config.json, model.safetensors with the MLM head, tokenizer files; "
        "train on it with --model OUT",
    )
    data_dir: str = opt("data", "folder with the CS224N CSV files, whose training sentences are the text")
    tasks: str = opt("sst,para,sts", "the tasks whose training files' sentences are used, comma-separated")
    text: str | None = opt(
        None, "more text: files of one sentence per line; several: a.txt,b.txt or the flag repeated", repeatable=True
    )
    epochs: int = opt(1, "passes over the sentences", bounds="[1, inf)")
    batch_size: int = opt(64, "sentences per step", bounds="[1, inf)")
    lr: float = opt(5e-5, "AdamW's learning rate, decayed linearly to 0", bounds="(0, inf)")
    weight_decay: float = opt(0.01, "AdamW's decoupled weight decay", bounds="[0, inf)")
    mask_prob: float = opt(
        0.15, "share of word pieces chosen (80% masked, 10% a random piece, 10% kept)", bounds="(0, 1)"
    )
    max_length: int = opt(128, "sentences are truncated to this many word pieces", bounds="[3, inf)")
    seed: int = opt(11711, "random seed of the order and the masks")
    save_every: int = opt(
        200,
        "steps between saves of the state to OUT.state, which a rerun continues from (0: at epoch ends only)",
        bounds="[0, inf)",
    )
    use_gpu: bool = opt(False, "train on CUDA")
    precision: Literal["auto", "fp32", "bf16"] = opt("auto", "bf16 autocast of the forward pass, as in training")

    def __post_init__(self) -> None:
        check_bounds(self)
        unknown = [t for t in self.task_names if t not in BUILTIN]
        if unknown:
            raise ValueError(f"--tasks {self.tasks}: the tasks are {', '.join(BUILTIN)}")

    @property
    def task_names(self) -> list[str]:
        return [t.strip() for t in self.tasks.split(",") if t.strip()]


def sentences_of(p: Pretraining) -> list[str]:
    """The distinct sentences of the tasks' training files and the text files, in the order first seen."""
    found: dict[str, None] = {}
    for task in p.task_names:
        spec = TASKS[task]
        path = readable_file(f"--data_dir {p.data_dir}:", Path(p.data_dir) / spec.files["train"])
        examples = read_examples(path, spec.text_columns, spec.label_column, spec.parse_label, False)
        for column in examples.texts:
            found.update(dict.fromkeys(column))
    for name in (p.text or "").split(","):
        if name:
            path = readable_file("--text", name)
            try:
                lines = path.read_text(encoding="utf-8-sig").splitlines()
            except UnicodeDecodeError as e:
                raise MtbertError(f"--text {path}: not UTF-8 text ({e})") from None
            found.update(dict.fromkeys(line.strip() for line in lines if line.strip()))
    found.pop("", None)
    if not found:
        raise MtbertError("no sentences to train on: check --tasks, --data_dir and --text")
    return list(found)


def mlm_loss(encoder: nn.Module, head: MaskedLMHead, inputs: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor):
    """The mean cross-entropy of the chosen tokens' predictions (0 when none is chosen); only their hidden states
    go through the head."""
    hidden = encoder(inputs, mask)  # (B, T, H)
    chosen = labels != IGNORE  # (B, T)
    logits = head(hidden[chosen]).float()  # (N, V)
    return F.cross_entropy(logits, labels[chosen], reduction="sum") / chosen.sum().clamp_min(1)


def pretrain(p: Pretraining) -> Path:
    """Runs `mtbert pretrain`; returns the written checkpoint folder."""
    out = Path(p.out)
    if out.exists():
        raise MtbertError(f"--out {out}: exists; give a new folder (a stopped run continues from {state_dir(out)})")
    writable_dir("--out", out.parent)
    started = time.perf_counter()
    torch.manual_seed(p.seed)  # the new head's weights and the dropout masks
    device = pick_device(p.use_gpu)
    folder = resolve(p.model, p.local_files_only).folder or default_checkpoint()
    family = read_config_json(folder)["model_type"]
    if family != "bert":
        raise MtbertError(f"--model {p.model}: mtbert pretrain continues BERT checkpoints; this one is {family}")
    tokenizer = Tokenizer.from_pretrained(folder)
    tokenizer.set_max_length(min(p.max_length, tokenizer.max_length))
    encoder = load_encoder(folder).train()
    head = MaskedLMHead(encoder)
    log.info("%s MLM head: %s", "the checkpoint's" if head.load_hf(read_weights(folder)) else "a new", folder)
    model = nn.ModuleDict({"encoder": encoder, "head": head}).to(device)
    sentences = sentences_of(p)
    ids = tokenizer.encode_ids(sentences)
    special = torch.tensor([tokenizer.token_id(t) for t in ("[CLS]", "[SEP]")])
    mask_id = tokenizer.token_id("[MASK]")
    steps_per_epoch = math.ceil(len(ids) / p.batch_size)
    total = steps_per_epoch * p.epochs
    decay = [q for q in model.parameters() if q.ndim > 1]
    rest = [q for q in model.parameters() if q.ndim <= 1]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": p.weight_decay}, {"params": rest, "weight_decay": 0.0}], lr=p.lr
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1 - step / total))
    masks = torch.Generator().manual_seed(p.seed)
    settings = {k: v for k, v in dataclasses.asdict(p).items() if k not in CHANGEABLE}
    step, losses = restore(out, settings, model, optimizer, scheduler, masks)
    log.info("%d sentences, %d steps of %d", len(ids), total, p.batch_size)
    bar = tqdm(total=total, initial=step, desc="pretraining", unit="step")
    with bar:
        while step < total:
            epoch, batch = divmod(step, steps_per_epoch)
            order = np.random.default_rng([p.seed, epoch]).permutation(len(ids))
            rows = order[batch * p.batch_size : (batch + 1) * p.batch_size]
            batch_ids, attention = pad_batch([ids[i] for i in rows], tokenizer.pad_id)
            maskable = attention.bool() & ~torch.isin(batch_ids, special)
            inputs, labels = mask_tokens(batch_ids, maskable, mask_id, encoder.config.vocab_size, masks, p.mask_prob)
            with autocast(device, p.precision):
                loss = mlm_loss(encoder, head, inputs.to(device), attention.to(device), labels.to(device))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            losses.append(loss.item())
            if not math.isfinite(losses[-1]):
                raise MtbertError(f"pretraining diverged at step {step} (loss {losses[-1]}); try a lower --lr")
            bar.update()
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}")
            if step % steps_per_epoch == 0 or (p.save_every and step % p.save_every == 0):
                save_state(out, settings, model, optimizer, scheduler, masks, step, losses)
    meta = {
        "settings": dataclasses.asdict(p),
        "sentences": len(ids),
        "steps": total,
        "epoch_losses": [
            round(float(np.mean(losses[i : i + steps_per_epoch])), 4) for i in range(0, total, steps_per_epoch)
        ],
        "seconds": round(time.perf_counter() - started, 1),  # of this invocation
    }
    write_checkpoint(out, encoder, head, tokenizer, meta)
    shutil.rmtree(state_dir(out), ignore_errors=True)
    return out


def state_dir(out: Path) -> Path:
    return out.with_name(out.name + ".state")


def save_state(out, settings, model, optimizer, scheduler, masks, step: int, losses: list[float]) -> None:
    state = {
        "settings": json.dumps(settings, sort_keys=True),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "masks": masks.get_state(),
        "step": step,
        "losses": torch.tensor(losses),
        "rng": torch.get_rng_state(),
    }
    buffer = io.BytesIO()
    torch.save(state, buffer)
    state_dir(out).mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(state_dir(out) / STATE, buffer.getvalue())


def restore(out, settings, model, optimizer, scheduler, masks) -> tuple[int, list[float]]:
    """The step and losses of a saved state of the same settings (restored into the objects), else (0, [])."""
    path = state_dir(out) / STATE
    if not path.is_file():
        return 0, []
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise MtbertError(f"{path}: cannot read the pretraining state ({e}); delete it to start afresh") from e
    saved = json.loads(state["settings"])
    changed = sorted(k for k in settings.keys() | saved.keys() if settings.get(k) != saved.get(k))
    if changed:
        raise MtbertError(
            f"{path}: saved with other settings ({', '.join('--' + k for k in changed)}); rerun with the saved "
            "ones, or delete the folder to start afresh"
        )
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    masks.set_state(state["masks"])
    torch.set_rng_state(state["rng"])
    log.info("continuing from %s: step %d", path, state["step"])
    return int(state["step"]), state["losses"].tolist()


def write_checkpoint(out: Path, encoder, head: MaskedLMHead, tokenizer: Tokenizer, meta: dict) -> None:
    """The Hugging Face BertForMaskedLM folder `out`, written to a temporary sibling that then takes its name."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        weights = hf_state_dict(encoder, prefix="bert.") | head.head_state()
        save_file(weights, tmp / "model.safetensors", metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(hf_config(encoder, "BertForMaskedLM"), indent=2) + "\n")
        (tmp / "mtbert_pretrain.json").write_text(json.dumps(meta, indent=2) + "\n")
        tokenizer.save(tmp)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

"""The saved-model format: safetensors weights, a JSON description (mtbert.json) and the tokenizer files in one
folder, written atomically, read without running pickles."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from safetensors.torch import load_file, save_file

from mtbert.errors import MtbertError
from mtbert.model.auto import AutoEncoder
from mtbert.model.encoder import BertEncoder, EncoderConfig
from mtbert.model.moe import MixtureOfEncoders
from mtbert.model.multitask import MultitaskModel
from mtbert.model.tasks import TASKS, register
from mtbert.model.tokenizer import Tokenizer
from mtbert.outputs import clear_stale, temp_prefix, user_permissions
from mtbert.task_file import TaskDecl

WEIGHTS, META = "model.safetensors", "mtbert.json"


def save_model(folder: str | Path, model: MultitaskModel, tokenizer: Tokenizer, meta: dict) -> None:
    """Writes the model to `folder`. The files are first written to a sibling temporary folder that then replaces
    `folder` (the previous one kept as `.NAME.old` until then), so that at every instant a complete model is on
    disk: `folder`, or the previous one that load_model recovers. What an earlier crash left is cleared first."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    old = recover(folder)
    clear_stale(folder.parent, temp_prefix(folder))
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=temp_prefix(folder)))
    try:
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(state, tmp / WEIGHTS, metadata={"format": "pt"})
        full_meta = {"encoder": model.config.to_dict(), "tasks": list(model.heads), **meta}
        if model.moe is not None:  # a mixture of experts: how many, and how its gate routes
            full_meta["moe"] = {"experts": len(model.moe.experts), "gate": model.moe.gate_mode}
        if model.pair_encoding != "bi":  # pairs encoded as one sequence ([SEP] tells their parts apart)
            full_meta["pair_encoding"] = model.pair_encoding
        declared = {t: TASKS[t].decl.to_dict() for t in model.heads if TASKS[t].decl is not None}
        if declared:  # tasks declared in a --tasks file: the model needs them to be loaded again
            full_meta["declared_tasks"] = declared
        if model.source is not None:  # the hub name and commit its encoder came from
            full_meta["source"] = model.source
        if model.tag_vocab is not None:  # a model that needs tags keeps their names, to tag new input the same way
            full_meta["tags"] = model.tag_vocab
        (tmp / META).write_text(json.dumps(full_meta, indent=2) + "\n")
        tokenizer.save(tmp)
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        user_permissions(tmp)
        if folder.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def recover(folder: Path) -> Path:
    """Puts back the previous model `.NAME.old` if a crash in save_model's swap left only it; returns its path."""
    old = folder.with_name(f".{folder.name}.old")
    if not folder.exists() and (old / WEIGHTS).is_file():
        with contextlib.suppress(OSError):  # a read-only folder: load_model reads the previous model where it is
            os.replace(old, folder)
    return old


# The entries of a model description (mtbert.json) and their JSON types; `encoder` and `tasks` are required.
DESCRIPTION = {
    "encoder": dict,
    "tasks": list,
    "pair_encoding": str,
    "moe": dict,
    "tags": dict,
    "declared_tasks": dict,
    "source": dict,
    "config": dict,
    "dev_metrics": dict,
}


JSON_TYPES = {dict: "object", list: "list", str: "string"}


def check_description(meta: object) -> None:
    """A ValueError where a model description's entries have the wrong type, so that a damaged mtbert.json is named
    as such rather than failing deep inside the model."""
    if not isinstance(meta, dict):
        raise ValueError(f"a JSON object is expected, not {type(meta).__name__}")
    for key in ("encoder", "tasks"):
        if key not in meta:
            raise ValueError(f"no {key!r} entry")
    for key, kind in DESCRIPTION.items():
        if meta.get(key) is not None and not isinstance(meta[key], kind):
            raise ValueError(f"{key!r} should be a JSON {JSON_TYPES[kind]}")
    if not meta["tasks"] or not all(isinstance(t, str) for t in meta["tasks"]):
        raise ValueError("'tasks' should be a list of task names")
    if meta.get("pair_encoding", "bi") not in ("bi", "cross"):
        raise ValueError(f"pair_encoding {meta['pair_encoding']!r} is neither bi nor cross")
    if meta.get("tags") is not None and not all(isinstance(meta["tags"].get(k), list) for k in ("pos", "ner")):
        raise ValueError("'tags' should hold the lists 'pos' and 'ner'")


def load_model(folder: str | Path, dropout: float = 0.0) -> tuple[MultitaskModel, Tokenizer, dict]:
    """Loads a folder written by `save_model` (no pickles are executed). Returns model (eval mode), tokenizer, meta."""
    folder = Path(folder)
    old = recover(folder)
    folder = old if not folder.exists() and old.is_dir() else folder
    meta_file, weights_file = folder / META, folder / WEIGHTS
    for f in (meta_file, weights_file):
        if not f.is_file():
            raise MtbertError(f"{f}: missing; is {folder} a model folder saved by `mtbert train`?")
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        check_description(meta)
        tasks = tuple(meta["tasks"])
        register([TaskDecl.from_dict(d) for d in (meta.get("declared_tasks") or {}).values()])
        unknown = [t for t in tasks if t not in TASKS]
        if unknown:
            raise ValueError(f"task {unknown[0]!r} is neither built in nor declared")
        moe = meta.get("moe")
        if "family" in meta["encoder"]:  # another family than BERT, through transformers
            encoder = AutoEncoder.from_dict(meta["encoder"])
        else:
            enc_cfg = EncoderConfig(**meta["encoder"])
            encoder = MixtureOfEncoders.empty(enc_cfg, moe["experts"], moe["gate"]) if moe else BertEncoder(enc_cfg)
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError, AttributeError) as e:
        raise MtbertError(f"{meta_file}: not a valid mtbert model description ({e})") from e
    try:
        state = load_file(weights_file)
    except Exception as e:  # safetensors raises its own error types on a damaged file
        raise MtbertError(f"{weights_file}: cannot read weights ({e}); the file may be truncated") from e
    tokenizer = Tokenizer.from_pretrained(folder)
    pairs = meta.get("pair_encoding", "bi")
    sep_id = tokenizer.token_id("[SEP]")
    try:
        model = MultitaskModel(encoder, tasks, dropout, tokenizer.pad_id, meta.get("tags"), pairs, sep_id)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise MtbertError(f"{meta_file}: not a valid mtbert model description ({e})") from e
    try:
        found = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # a weight of another shape: torch's message, on one line
        detail = " ".join(str(e).split())
        raise MtbertError(f"{weights_file}: weights do not match {meta_file} ({detail[:300]})") from e
    wrong = [(what, keys) for what, keys in (("missing", found.missing_keys), ("unexpected", found.unexpected_keys))]
    if any(keys for _, keys in wrong):
        detail = "; ".join(f"{len(keys)} {what}, the first {keys[0]}" for what, keys in wrong if keys)
        raise MtbertError(f"{weights_file}: weights do not match {meta_file} ({detail})")
    model.source = meta.get("source")
    return model.eval(), tokenizer, meta

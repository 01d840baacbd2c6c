"""Where a `--model` comes from: a local checkpoint folder, the packaged MiniLM, or a Hugging Face hub name
(`bert-base-uncased`, `org/name`, `org/name@revision`) downloaded once into huggingface_hub's cache."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from mtbert.errors import MtbertError

# A hub repository id, optionally @revision: one or two names of letters, digits, '-', '_' and '.'
HUB_NAME = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*(?:/[A-Za-z0-9][\w.-]*)?)(?:@(?P<revision>[\w./-]+))?$")
# The files a checkpoint folder is read from (pytorch_model.bin where there is no safetensors file); a hub
# repository's other files (ONNX, TF, Flax weights) are not fetched.
CHECKPOINT_FILES = [
    "config.json",
    "*.safetensors",
    "model.safetensors.index.json",
    "vocab.txt",
    "tokenizer.json",
    "vocab.json",
    "merges.txt",
    "*.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "sentence_bert_config.json",
]


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint folder on disk, and the hub name and commit it was downloaded from (None: a local folder)."""

    folder: Path | None  # None: the packaged default
    name: str | None = None
    revision: str | None = None

    def source(self) -> dict | None:
        """What a saved model records of where its encoder came from."""
        return {"model": self.name, "revision": self.revision} if self.name is not None else None


def is_hub_name(model: str) -> bool:
    """Whether `model` reads as a hub name rather than a path (a path that exists is a path: see resolve)."""
    return HUB_NAME.match(model) is not None and not model.startswith((".", "/", "~")) and not Path(model).exists()


def resolve(model: str | Path | None, local_files_only: bool = False) -> Checkpoint:
    """The checkpoint `model` names: None the packaged default; an existing folder itself; else a hub name, taken
    from the cache (HF_HOME, HF_HUB_CACHE) or downloaded into it with a progress bar. `local_files_only` (or
    HF_HUB_OFFLINE=1) resolves from the cache only. A token (HF_TOKEN, `hf auth login`) opens private models."""
    if model is None:
        return Checkpoint(None)
    path = Path(model).expanduser()
    if path.exists() or not is_hub_name(str(model)):
        if not path.is_dir():
            raise MtbertError(f"{model}: no such checkpoint folder")
        return Checkpoint(path)
    return download(str(model), local_files_only)


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "on", "yes", "true")


def cache_dir() -> str:
    """huggingface_hub's cache as the environment says now (its own constants are read once, at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return os.path.join(os.path.expanduser(home), "hub")


def download(model: str, local_files_only: bool) -> Checkpoint:
    """A hub model's folder in the cache: downloaded unless it is there (or only looked up there, offline)."""
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import (
            GatedRepoError,
            HfHubHTTPError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )
    except ImportError as e:
        raise MtbertError(f"--model {model}: a hub name needs huggingface_hub (pip install huggingface_hub)") from e
    match = HUB_NAME.match(model)
    repo, revision = match["repo"], match["revision"] or "main"
    cache_only = local_files_only or offline()

    def fetch(patterns: list[str]) -> Path:
        return Path(
            snapshot_download(
                repo,
                revision=revision,
                allow_patterns=patterns,
                cache_dir=cache_dir(),
                endpoint=os.environ.get("HF_ENDPOINT") or None,
                local_files_only=cache_only,
            )
        )

    try:
        folder = fetch(CHECKPOINT_FILES)
        if not any(folder.glob("*.safetensors")):  # an older checkpoint: PyTorch's file, read without pickles
            folder = fetch(["pytorch_model.bin"])
    except LocalEntryNotFoundError as e:
        why = "--local_files_only" if local_files_only else "HF_HUB_OFFLINE" if offline() else "the hub is unreachable"
        raise MtbertError(
            f"--model {model}: not in the Hugging Face cache {cache_dir()} ({why}); download it once with network "
            f"access, or set HF_HOME to the cache that holds it"
        ) from e
    except GatedRepoError as e:
        raise MtbertError(f"--model {model}: a gated model; accept its terms on the hub and set HF_TOKEN") from e
    except RepositoryNotFoundError as e:
        raise MtbertError(
            f"--model {model}: no such checkpoint folder, and no such model on the Hugging Face hub (a private one "
            f"needs HF_TOKEN)"
        ) from e
    except RevisionNotFoundError as e:
        raise MtbertError(f"--model {model}: the hub model has no revision {revision!r}") from e
    except (HfHubHTTPError, OSError) as e:
        raise MtbertError(f"--model {model}: cannot download from the Hugging Face hub ({e})") from e
    if not (folder / "config.json").is_file():
        raise MtbertError(f"--model {model}: the hub model has no config.json; is it a transformers checkpoint?")
    return Checkpoint(folder, repo, folder.name)  # the cache's snapshot folder is named by the commit

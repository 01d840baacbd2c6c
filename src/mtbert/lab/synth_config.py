"""The settings of `mtbert synth` (mtbert.lab.synth), one typed dataclass whose fields are the command's flags."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mtbert.config import opt
from mtbert.model.tasks import TASKS


@dataclass(frozen=True)
class SynthConfig:
    # --- what to learn from, what to write
    data_dir: str = opt("data", "folder with the CS224N CSV files")
    sst_train: str | None = opt(None, "the SST training file to learn from (default: DATA_DIR/ids-sst-train.csv)")
    held_out: str | None = opt(
        None,
        "files whose sentences must not be generated (leakage into evaluation): a.csv,b.csv or the flag repeated "
        "(default: DATA_DIR/ids-sst-dev.csv and ids-sst-test-student.csv)",
        repeatable=True,
    )
    out: str = opt("synthetic/ids-sst-train-synthetic.csv", "the file to write, in the ids-sst-train layout")
    per_class: int = opt(1000, "sentences sampled per label")
    # --- the generator
    generator: str = opt(
        "small",
        "small: a GPT-2-shaped model trained from scratch on the SST sentences (offline, CPU minutes); PATH: a local "
        "Hugging Face causal-LM folder, fine-tuned the same way; api: an OpenAI-compatible chat-completions endpoint",
    )
    model: str | None = opt(None, "small: the BERT checkpoint whose WordPiece vocabulary it uses (default: MiniLM)")
    fit_epochs: int = opt(3, "epochs of fitting the generator")
    lr: float | None = opt(None, "fitting's AdamW learning rate (default: 1e-3 for small, 5e-5 for a PATH)")
    batch_size: int = opt(32, "sentences per fitting step")
    temperature: float = opt(1.0, "sampling temperature")
    top_p: float = opt(0.95, "nucleus sampling's probability mass")
    seed: int = opt(11711, "random seed of fitting and sampling")
    # --- filters
    min_words: int = opt(3, "shorter sentences are removed")
    max_words: int = opt(60, "longer sentences are removed")
    filter_checkpoint: str | None = opt(
        None, "a trained mtbert model: keep a sentence only where it gives its label at least --min_confidence"
    )
    min_confidence: float = opt(0.5, "see --filter_checkpoint")
    # --- --generator api
    api_base: str | None = opt(None, "api: the endpoint's base URL, as https://api.openai.com/v1")
    api_model: str | None = opt(None, "api: the model name sent with each request")
    api_key_env: str = opt(
        "OPENAI_API_KEY", "api: the environment variable holding the key, sent as a Bearer token (none if unset)"
    )
    api_batch: int = opt(20, "api: sentences asked for per request")
    api_retries: int = opt(4, "api: retries of a failed request")
    api_timeout: float = opt(60.0, "api: seconds to wait for an answer")
    api_backoff: float = opt(2.0, "api: seconds before the first retry, doubled for each next one")

    def __post_init__(self) -> None:
        for name, low in [
            ("per_class", 1),
            ("fit_epochs", 1),
            ("batch_size", 1),
            ("min_words", 1),
            ("api_batch", 1),
            ("api_retries", 0),
        ]:
            if getattr(self, name) < low:
                raise ValueError(f"--{name} must be at least {low}, got {getattr(self, name)}")
        if not self.temperature > 0 or not 0 < self.top_p <= 1:
            raise ValueError("--temperature must be above 0 and --top_p in (0, 1]")
        if self.max_words < self.min_words:
            raise ValueError(f"--max_words {self.max_words} is below --min_words {self.min_words}")
        if not 0 <= self.min_confidence <= 1:
            raise ValueError(f"--min_confidence must be in [0, 1], got {self.min_confidence}")
        if self.generator == "api" and not (self.api_base and self.api_model):
            raise ValueError("--generator api needs --api_base URL and --api_model NAME")
        if not self.api_timeout > 0 or self.api_backoff < 0:
            raise ValueError("--api_timeout must be above 0 and --api_backoff not negative")

    @property
    def train_file(self) -> Path:
        return Path(self.sst_train) if self.sst_train else Path(self.data_dir, TASKS["sst"].files["train"])

    @property
    def held_out_files(self) -> list[Path]:
        if self.held_out:
            return [Path(p.strip()) for p in self.held_out.split(",") if p.strip()]
        return [Path(self.data_dir, TASKS["sst"].files[split]) for split in ("dev", "test")]

"""Shared fixtures: a tiny random BERT checkpoint in Hugging Face layout, toy CS224N CSVs, the real data folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mtbert.config import Config
from mtbert.model.encoder import BertEncoder, EncoderConfig
from mtbert.model.hf import default_checkpoint
from mtbert.model.tokenizer import Tokenizer

REPO = Path(__file__).resolve().parents[1]
# The tiny config of the HF/Google BertModelTester: odd sizes catch swapped dimensions.
TINY = dict(
    vocab_size=99,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=37,
    max_position_embeddings=64,
    type_vocab_size=2,
)
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = (
    "the a film movie is was good bad great awful fine dull boring lovely terrible best worst plot actors "
    "what how why can do you i my get make learn best way to a in of and cat dog sits runs on mat park "
    "man woman plays guitar piano eats food rides horse bike two people are walking street"
).split()


@pytest.fixture(autouse=True)
def task_table():
    """Tasks a test declares leave the table with it."""
    from mtbert.model.tasks import TASKS

    before = dict(TASKS)
    yield TASKS
    TASKS.clear()
    TASKS.update(before)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked gpu run where CUDA is, and are skipped elsewhere."""
    if torch.cuda.is_available():
        return
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(pytest.mark.skip(reason="needs CUDA"))


def encoder_batch(B: int = 13, T: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    """Random token ids (B, T) of the tiny vocabulary, right-padded to random lengths, and their mask."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, TINY["vocab_size"], (B, T), generator=g)
    lengths = torch.randint(2, T + 1, (B,), generator=g)
    mask = (torch.arange(T)[None, :] < lengths[:, None]).long()
    return ids * mask, mask


def real_data_dir() -> Path:
    """The CS224N files: data/ as `make` fetches it, else ../shared/data."""
    for candidate in (REPO / "data", REPO.parent / "shared" / "data"):
        if (candidate / "sts-dev.csv").is_file():
            return candidate
    raise FileNotFoundError("no data: run `make data` (copies ../shared/data) or `mtbert data fetch`")


@pytest.fixture(scope="package")
def data_dir() -> Path:
    return real_data_dir()


@pytest.fixture(scope="package")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random tiny `transformers.BertModel` saved as a Hugging Face checkpoint folder, with a small vocabulary."""
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    vocab = list(dict.fromkeys(SPECIAL + WORDS + [".", ",", "?", "'", "s"]))
    vocab += [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"][: TINY["vocab_size"] - len(vocab)]
    assert len(vocab) <= TINY["vocab_size"]
    vocab += [f"[unused{i}]" for i in range(TINY["vocab_size"] - len(vocab))]
    BertModel(BertConfig(**TINY)).save_pretrained(folder)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (folder / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
    return folder


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    lines = ["\t".join(["", *header])] + ["\t".join([str(i), *map(str, r)]) for i, r in enumerate(rows)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


SST_ROWS = [
    ("the film is great", 4),
    ("a lovely movie", 4),
    ("the plot was dull", 1),
    ("awful and boring", 0),
    ("the actors are fine", 2),
    ("the worst film", 0),
    ("a good movie", 3),
    ("terrible plot", 1),
]
PARA_ROWS = [
    ("how can i learn guitar", "what is the best way to learn guitar", 1),
    ("why do cats sit on mats", "how do i make food", 0),
    ("what is a good movie", "what is the best film", 1),
    ("how can you ride a horse", "why are people walking", 0),
    ("can a dog run in the park", "do dogs run in a park", 1),
    ("what do you eat", "how can i play piano", 0),
]
STS_ROWS = [
    ("a man plays guitar", "a man plays the guitar", 4.8),
    ("a woman eats food", "a man rides a horse", 0.4),
    ("two people are walking", "two people walking on the street", 3.9),
    ("a cat sits on the mat", "a dog runs in the park", 0.8),
    ("a man rides a bike", "a man rides a horse", 2.5),
    ("a woman plays piano", "a woman plays the piano", 5.0),
]


@pytest.fixture()
def toy_data(tmp_path: Path) -> Path:
    """Toy train/dev/test files of all three tasks in the CS224N layout (dev = train, to test fitting)."""
    return toy_data_in(tmp_path / "data")


def toy_data_in(d: Path) -> Path:
    """The toy data files (see toy_data) written to the new folder `d`."""
    d.mkdir()
    for split in ("train", "dev"):
        write_csv(
            d / f"ids-sst-{split}.csv",
            ["id", "sentence", "sentiment"],
            [(f"s{i}", s, y) for i, (s, y) in enumerate(SST_ROWS)],
        )
        write_csv(
            d / f"quora-{split}.csv",
            ["id", "sentence1", "sentence2", "is_duplicate"],
            [(f"q{i}", a, b, float(y)) for i, (a, b, y) in enumerate(PARA_ROWS)],
        )
        write_csv(
            d / f"sts-{split}.csv",
            ["id", "sentence1", "sentence2", "similarity"],
            [(f"t{i}", a, b, y) for i, (a, b, y) in enumerate(STS_ROWS)],
        )
    write_csv(d / "ids-sst-test-student.csv", ["id", "sentence"], [(f"s{i}", s) for i, (s, _) in enumerate(SST_ROWS)])
    write_csv(
        d / "sts-test-student.csv",
        ["id", "sentence1", "sentence2"],
        [(f"t{i}", a, b) for i, (a, b, _) in enumerate(STS_ROWS)],
    )
    return d


def run_paths(folder: Path) -> dict[str, str]:
    """Flags that send a run's models, logs and prediction files into `folder`."""
    outputs = {
        f"{t}_{s}_out": str(folder / f"{t}-{s}-output.csv") for t in ("sst", "para", "sts") for s in ("dev", "test")
    }
    return {"save_dir": str(folder / "models"), "logdir": str(folder / "runs"), **outputs}


def toy_config(folder: Path, data: Path, checkpoint: Path, **changes) -> Config:
    """A run on the toy data that fits in a second, its outputs in `folder`."""
    # fp32: the same numbers on every CPU (auto is bf16 where the CPU has bf16 instructions)
    settings = dict(
        epochs=12,
        samples_per_epoch=8,
        batch_size=8,
        lr=3e-3,
        scheduler="none",
        hidden_dropout_prob=0.0,
        clip=1.0,
        precision="fp32",
    )
    return Config.from_settings(
        dict(model=str(checkpoint), data_dir=str(data), **{**settings, **changes}, **run_paths(folder))
    )


@pytest.fixture()
def cfg(tmp_path: Path, toy_data: Path, tiny_checkpoint: Path) -> Config:
    return toy_config(tmp_path, toy_data, tiny_checkpoint)


CHILD = Path(__file__).with_name("train_child.py")


def run_child(cfg: Config, kill_at: int | None = None) -> subprocess.CompletedProcess:
    argv = [sys.executable, str(CHILD), json.dumps(cfg.settings())] + ([str(kill_at)] if kill_at else [])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def first_rows(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every CSV of the data folder cut to its header and 40 rows."""
    folder = tmp_path_factory.mktemp("first-rows")
    for file in data_dir.glob("*.csv"):
        lines = file.read_text(encoding="utf-8").splitlines(keepends=True)
        (folder / file.name).write_text("".join(lines[:41]), encoding="utf-8")
    return folder


@pytest.fixture()
def http_data(toy_data):
    """The toy data files (and a Quora test file) served over HTTP on 127.0.0.1: (base URL of data/, request log)."""
    import functools
    import http.server
    import threading

    write_csv(toy_data / "quora-test-student.csv", ["id", "sentence1", "sentence2"], [("q0", "a cat", "a dog")])
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format, *args) -> None:
            requests.append(self.path)

    handler = functools.partial(Handler, directory=str(toy_data.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/{toy_data.name}", requests
    server.shutdown()
    server.server_close()


@pytest.fixture()
def tiny_encoder() -> BertEncoder:
    torch.manual_seed(0)
    return BertEncoder(EncoderConfig(**TINY)).eval()


@pytest.fixture()
def resume_cfg(tmp_path: Path, toy_data: Path, tiny_checkpoint: Path) -> Config:
    # 4 steps per epoch; dropout on, so that resuming must restore the random generators too
    return Config.from_settings(
        dict(
            model=str(tiny_checkpoint),
            data_dir=str(toy_data),
            epochs=3,
            samples_per_epoch=8,
            batch_size=2,
            lr=3e-3,
            scheduler="plateau",
            hidden_dropout_prob=0.1,
            save_every=3,
            resume=str(tmp_path / "state"),
            **run_paths(tmp_path),
        )
    )


@pytest.fixture()
def still_cfg(tmp_path: Path, toy_data: Path, tiny_checkpoint: Path) -> Config:
    """No dropout at all (attention's too, which --hidden_dropout_prob leaves as the checkpoint says): a step's
    numbers then do not depend on how its sentences are cut into passes."""
    checkpoint = shutil.copytree(tiny_checkpoint, tmp_path / "checkpoint")
    config = json.loads((checkpoint / "config.json").read_text())
    (checkpoint / "config.json").write_text(json.dumps({**config, "attention_probs_dropout_prob": 0.0}))
    return toy_config(tmp_path, toy_data, checkpoint, epochs=2, samples_per_epoch=6, batch_size=4, clip=0.25)


@pytest.fixture(scope="module")
def tokenizers():
    from transformers import BertTokenizer

    return Tokenizer.from_pretrained(), BertTokenizer.from_pretrained(str(default_checkpoint()))

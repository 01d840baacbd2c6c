"""Shared fixtures: a tiny random BERT checkpoint in Hugging Face layout, toy CS224N CSVs, the real data folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

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


def real_data_dir() -> Path:
    """The CS224N files: data/ as `make` fetches it, else ../shared/data."""
    for candidate in (REPO / "data", REPO.parent / "shared" / "data"):
        if (candidate / "sts-dev.csv").is_file():
            return candidate
    raise FileNotFoundError("no data: run `make data` (copies ../shared/data) or `mtbert data fetch`")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return real_data_dir()


@pytest.fixture(scope="session")
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
    d = tmp_path / "data"
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

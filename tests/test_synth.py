"""`mtbert synth`: generators that fit and write valid files, each filter on crafted rows, the API generator
against a fake server on 127.0.0.1 (answers, errors, timeouts, malformed answers, resuming)."""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from mtbert.cli import main
from mtbert.data.synthetic import filter_rows, normalise
from mtbert.data.task_data import read_task
from mtbert.fitting import fit
from mtbert.lab.synth import confident
from mtbert.model.tokenizer import Tokenizer
from mtbert.train.setup import run_name


def synth(toy_data: Path, out: Path, *flags: str) -> None:
    main(["synth", "--data_dir", str(toy_data), "--out", str(out), *flags])


def read_generated(path: Path, tokenizer_folder: Path):
    return read_task(path, "sst", Tokenizer.from_pretrained(tokenizer_folder))


def test_the_small_generator_fits_and_writes_every_label(toy_data, tiny_checkpoint, tmp_path, capsys) -> None:
    out = tmp_path / "syn.csv"
    synth(
        toy_data,
        out,
        "--model",
        str(tiny_checkpoint),
        "--per_class",
        "6",
        "--fit_epochs",
        "2",
        "--batch_size",
        "4",
        "--min_words",
        "1",
        "--max_words",
        "200",
    )
    data = read_generated(out, tiny_checkpoint)  # the training reader accepts the file
    assert set(data.labels.long().tolist()) == {0, 1, 2, 3, 4}
    assert data.examples.is_synthetic().all() and len(set(data.examples.ids)) == len(data)
    printed = capsys.readouterr().out
    assert re.search(r"generated 30 sentences .*removed: length \d+, exact duplicate \d+", printed)
    assert f"train on them: mtbert train --sst_train {toy_data / 'ids-sst-train.csv'},{out}" in printed


def tiny_causal_lm(folder: Path) -> Path:
    """A random tiny GPT-2 with a word-level tokenizer of the toy words, saved as a Hugging Face folder."""
    from tokenizers import Tokenizer as RustTokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    from tests.conftest import WORDS

    words = ["<unk>", "<eos>", ":", *dict.fromkeys(WORDS + ["very", "negative", "neutral", "positive"])]
    rust = RustTokenizer(WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    rust.pre_tokenizer = Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=rust, eos_token="<eos>", unk_token="<unk>").save_pretrained(folder)
    torch.manual_seed(0)
    GPT2LMHeadModel(
        GPT2Config(
            vocab_size=len(words), n_positions=64, n_embd=32, n_layer=1, n_head=2, eos_token_id=1, bos_token_id=1
        )
    ).save_pretrained(folder)
    return folder


def test_a_local_causal_lm_folder_is_fine_tuned_the_same_way(toy_data, tiny_checkpoint, tmp_path) -> None:
    out = tmp_path / "syn.csv"
    folder = tiny_causal_lm(tmp_path / "gpt")
    synth(
        toy_data,
        out,
        "--generator",
        str(folder),
        "--per_class",
        "4",
        "--fit_epochs",
        "1",
        "--min_words",
        "1",
        "--max_words",
        "200",
        "--lr",
        "1e-3",
    )
    data = read_generated(out, tiny_checkpoint)
    assert set(data.labels.long().tolist()) == {0, 1, 2, 3, 4} and data.examples.is_synthetic().all()


def test_each_filter_removes_what_it_should() -> None:
    originals = ["The film is great .", "a dull plot"]
    held_out = ["A lovely, LOVELY movie!"]
    rows = [
        ("too short", 3),  # length (min 3 words: 2)
        ("one two three four five six seven eight", 2),  # length (max 6)
        ("The film is great .", 4),  # exact duplicate of an original
        ("a brand new sentence here", 3),  # kept
        ("a brand new sentence here", 1),  # exact duplicate of a generated row, whatever its label
        ("A brand-new sentence, here!", 3),  # near duplicate (case, punctuation)
        ("the FILM is great", 4),  # near duplicate of an original
        ("a lovely lovely movie", 4),  # a dev/test sentence: leakage
        ("Another fine   original\tline", 2),  # kept, its spaces collapsed
    ]
    result = filter_rows(rows, originals, held_out, min_words=3, max_words=6)
    assert result.kept == [("a brand new sentence here", 3), ("Another fine original line", 2)]
    assert result.removed == {"length": 2, "exact duplicate": 2, "near duplicate": 2, "in dev/test": 1}
    assert normalise("The café's  brand-new GREAT!") == normalise("the cafes brand new great")


def test_the_confidence_filter_keeps_what_a_trained_model_is_sure_of(cfg, tiny_checkpoint) -> None:
    fit(cfg)
    model_dir = Path(cfg.save_dir) / run_name(cfg)
    rows = [("the film is great", 4), ("awful and boring", 0), ("the film is great", 0), ("a lovely movie", 1)]
    kept_all, removed_none = confident(rows, model_dir, 0.0)
    kept_none, removed_all = confident(rows, model_dir, 1.0)
    assert (kept_all, removed_none, kept_none, removed_all) == (rows, 0, [], 4)
    from mtbert.data.files import Examples
    from mtbert.data.task_data import task_data
    from mtbert.inference.evaluate import outputs
    from mtbert.inference.saved import load_model

    model, tokenizer, _ = load_model(model_dir)
    texts = Examples(Path("x"), ["0", "1", "2", "3"], [[t for t, _ in rows]], None)
    p = torch.softmax(outputs(model, {"sst": task_data("sst", texts, tokenizer)})["sst"], -1)
    own = p[torch.arange(4), torch.tensor([y for _, y in rows])]
    threshold = float(own.median())
    kept, removed = confident(rows, model_dir, threshold)
    assert kept == [r for r, q in zip(rows, own.tolist(), strict=True) if q >= threshold] and removed == 4 - len(kept)


class FakeAPI:
    """A chat-completions server on 127.0.0.1: `modes` is what each next request gets ("ok", "500", "401", "slow",
    "junk"); once used up, "ok". An ok answer is a JSON list of as many new sentences as the prompt asks for."""

    def __init__(self, modes: list[str]):
        self.modes, self.requests, self.count = list(modes), [], 0
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                api.requests.append((self.path, self.headers.get("Authorization"), body))
                mode = api.modes.pop(0) if api.modes else "ok"
                if mode == "slow":
                    time.sleep(1.0)
                if mode in ("500", "401"):
                    self.send_response(int(mode))
                    self.end_headers()
                    self.wfile.write(b"nope")
                    return
                n = int(re.search(r"Write (\d+) new", body["messages"][0]["content"]).group(1))
                sentences = []
                for _ in range(n):
                    api.count += 1
                    sentences.append(f"generated review number {api.count} is here")
                content = "no json here" if mode == "junk" else "```json\n" + json.dumps(sentences) + "\n```"
                answer = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def api():
    servers: list[FakeAPI] = []

    def start(modes: list[str]) -> FakeAPI:
        servers.append(FakeAPI(modes))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def api_flags(server: FakeAPI, *extra: str) -> list[str]:
    return [
        "--generator",
        "api",
        "--api_base",
        server.url,
        "--api_model",
        "fake-1",
        "--per_class",
        "3",
        "--api_batch",
        "2",
        "--api_retries",
        "1",
        "--api_backoff",
        "0",
        "--api_timeout",
        "0.5",
        *extra,
    ]


def test_the_api_generator_asks_in_batches_and_writes_every_label(
    api, toy_data, tiny_checkpoint, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("MY_KEY", "secret")
    server = api([])
    out = tmp_path / "syn.csv"
    synth(toy_data, out, *api_flags(server, "--api_key_env", "MY_KEY"))
    data = read_generated(out, tiny_checkpoint)
    assert sorted(data.labels.long().tolist()) == [y for y in range(5) for _ in range(3)]
    assert len(server.requests) == 10  # 2 + 1 sentences per label
    path, auth, body = server.requests[0]
    assert path == "/v1/chat/completions" and auth == "Bearer secret" and body["model"] == "fake-1"
    assert "very negative" in body["messages"][0]["content"] and not out.with_name("syn.csv.partial").exists()


@pytest.mark.parametrize(
    "modes, message",
    [
        (["ok", "ok", "500", "500"], "HTTP 500 Internal Server Error after 2 tries"),
        (["ok", "ok", "slow", "slow"], "no answer .*after 2 tries"),
        (["ok", "ok", "junk", "junk"], "a malformed answer .*not a JSON list.* after 2 tries"),
        (["ok", "ok", "401"], "HTTP 401 Unauthorized"),
    ],
)
def test_api_failures_stop_with_exit_2_and_keep_what_was_received(
    api, toy_data, tiny_checkpoint, tmp_path, capsys, modes, message
) -> None:
    server = api(modes)
    out = tmp_path / "syn.csv"
    with pytest.raises(SystemExit) as e:
        synth(toy_data, out, *api_flags(server))
    err = capsys.readouterr().err
    assert e.value.code == 2 and re.search(message, err), err
    partial = out.with_name("syn.csv.partial")
    assert "the 3 sentences received so far are in" in err and len(partial.read_text().splitlines()) == 3
    assert not out.exists()
    asked = len(server.requests)
    server.modes = []  # the server works again: the same command continues and asks only for the rest
    synth(toy_data, out, *api_flags(server))
    assert len(server.requests) - asked == 8 and len(read_generated(out, tiny_checkpoint)) == 15


def test_synth_flags_are_checked(toy_data, tmp_path, capsys) -> None:
    for flags, message in [
        (["--generator", "api"], "--generator api needs --api_base URL and --api_model NAME"),
        (["--per_class", "0"], "--per_class must be at least 1"),
        (["--min_words", "5", "--max_words", "2"], "--max_words 2 is below --min_words 5"),
        (["--generator", str(tmp_path)], "not a Hugging Face model folder"),
        (["--sst_train", str(tmp_path / "none.csv")], "none.csv"),
    ]:
        with pytest.raises(SystemExit) as e:
            synth(toy_data, tmp_path / "o.csv", *flags)
        assert e.value.code == 2 and message in capsys.readouterr().err

"""mtbert serve: real HTTP requests on 127.0.0.1 against the server, batching, limits and errors."""

import contextlib
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import mtbert
from mtbert.fitting import fit
from mtbert.serve.http import Limits, create_app

from .conftest import toy_config, toy_data_in

LIMITS = Limits(max_texts=8, max_chars=200, max_body_bytes=4096, max_batch=64, batch_window_ms=50)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(url: str, body: bytes | dict | None = None, headers: dict | None = None) -> tuple[int, dict]:
    """A request from a real HTTP client: (status, JSON answer)."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def wait_for(url: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(url)


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory, tiny_checkpoint: Path) -> Path:
    folder = tmp_path_factory.mktemp("serve")
    cfg = toy_config(folder, toy_data_in(folder / "data"), tiny_checkpoint, epochs=2)
    fit(cfg)
    return Path(cfg.save_dir) / "finetune-2-0.003-adamw-none-multitask"


@contextlib.contextmanager
def serving(app) -> Iterator[str]:
    """An ASGI app served by uvicorn on 127.0.0.1 in a thread, up when this yields its base URL; stopped after."""
    import uvicorn

    port = free_port()
    running = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(url + "/health")
        yield url
    finally:
        running.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def server(model_folder: Path):
    """The app of the trained tiny model, served by uvicorn in a thread: (base URL, predictor)."""
    predictor = mtbert.load(model_folder, precision="fp32")
    with serving(create_app(predictor, LIMITS)) as url:
        yield url, predictor


def test_the_server_answers_what_the_api_gives(server) -> None:
    url, predictor = server
    texts = ["a lovely movie", "the plot was dull", "fine"]
    status, answer = call(url + "/sentiment", {"texts": texts})
    assert status == 200
    expected = predictor.sentiment(texts)
    assert [r["label"] for r in answer["results"]] == [r.label for r in expected]
    assert [r["name"] for r in answer["results"]] == [r.name for r in expected]
    assert answer["results"][1]["probabilities"] == pytest.approx(expected[1].probabilities, abs=1e-6)

    pairs = [["a man plays guitar", "a man plays the guitar"], ["a cat", "a dog"]]
    status, answer = call(url + "/similarity", {"pairs": pairs})
    assert status == 200
    assert [r["similarity"] for r in answer["results"]] == pytest.approx(predictor.similarity(pairs), abs=1e-5)
    status, answer = call(url + "/paraphrase", {"pairs": pairs})
    assert status == 200 and [set(r) for r in answer["results"]] == [{"probability", "label"}] * 2
    assert [r["label"] for r in answer["results"]] == [r.label for r in predictor.paraphrase(pairs)]

    status, health = call(url + "/health")
    assert status == 200 and health["status"] == "ok" and health["tasks"] == ["sst", "para", "sts"]
    status, schema = call(url + "/openapi.json")
    assert status == 200 and {"/sentiment", "/paraphrase", "/similarity", "/health"} <= set(schema["paths"])


@pytest.mark.parametrize(
    ("path", "body", "status", "words"),
    [
        ("/sentiment", {"texts": []}, 422, "at least 1"),
        ("/sentiment", {}, 422, "Field required"),
        ("/sentiment", {"texts": "a string"}, 422, "list"),
        ("/sentiment", {"texts": ["ok"] * 9}, 413, "at most 8 per request (max_texts)"),
        ("/sentiment", {"texts": ["x" * 201]}, 422, "201 characters: at most 200 (max_chars)"),
        ("/sentiment", {"texts": ["  "]}, 422, "text 0 is empty"),
        ("/similarity", {"pairs": [["a", "b", "c"]]}, 422, "pairs"),
        ("/similarity", {"pairs": [["a", "b"]] * 3 + [["a", "y" * 300]]}, 422, "text 7 has 300 characters"),
        ("/sentiment", b'{"texts": ["unclosed"', 422, "JSON decode error"),
        ("/sentiment", b"\xff\xfe not json", 400, "error parsing the body"),
        ("/sentiment", json.dumps({"texts": ["x" * 5000]}).encode(), 413, "over 4096 bytes (max_body_bytes)"),
    ],
)
def test_bad_input_answers_4xx_and_the_server_serves_on(server, path, body, status, words) -> None:
    url, _ = server
    got, answer = call(url + path, body)
    assert got == status and words in json.dumps(answer), answer
    assert call(url + "/sentiment", {"texts": ["still serving"]})[0] == 200


def test_a_chunked_body_over_the_limit_is_refused(server) -> None:
    url, _ = server
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        chunk = b"%x\r\n%s\r\n" % (3000, b"x" * 3000)  # two chunks, no Content-Length: 6000 bytes in all
        head = b"POST /sentiment HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        s.sendall(head + chunk * 2 + b"0\r\n\r\n")
        status = s.recv(4096).split(b"\r\n", 1)[0]
    assert status == b"HTTP/1.1 413 Request Entity Too Large"


def test_concurrent_requests_are_batched(server) -> None:
    url, predictor = server
    before = call(url + "/health")[1]["served"]["sst"]
    texts = [f"movie number {i} was {'great' if i % 2 else 'dull'}" for i in range(16)]
    start = threading.Barrier(16)

    def one(text: str) -> tuple[int, dict]:
        start.wait()
        return call(url + "/sentiment", {"texts": [text]})

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(one, texts))
    assert all(status == 200 for status, _ in answers)
    assert [a["results"][0]["label"] for _, a in answers] == [r.label for r in predictor.sentiment(texts)]
    after = call(url + "/health")[1]["served"]["sst"]
    items, batches = after["items"] - before["items"], after["batches"] - before["batches"]
    assert items == 16 and batches < 8  # the 16 one-text requests ran in a few batches, not one by one


def test_a_failing_prediction_answers_500_and_the_next_request_is_served(server, monkeypatch) -> None:
    url, predictor = server
    real = predictor.similarity
    calls = []

    def broken(pairs):
        calls.append(pairs)
        if len(calls) == 1:
            raise RuntimeError("out of memory")
        return real(pairs)

    monkeypatch.setattr(predictor, "similarity", broken)
    status, answer = call(url + "/similarity", {"pairs": [["a", "b"]]})
    assert status == 500 and "RuntimeError: out of memory" in answer["detail"]
    assert call(url + "/similarity", {"pairs": [["a", "b"]]})[0] == 200


@pytest.mark.slow
def test_mtbert_serve_command(model_folder: Path) -> None:
    port = free_port()
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mtbert",
            "serve",
            "--checkpoint",
            str(model_folder),
            "--port",
            str(port),
            "--max_texts",
            "2",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(f"http://127.0.0.1:{port}/health")
        assert f"on http://127.0.0.1:{port}" in child.stdout.readline()
        status, answer = call(f"http://127.0.0.1:{port}/sentiment", {"texts": ["a", "b", "c"]})
        assert status == 413 and "at most 2 per request" in answer["detail"]
        taken = subprocess.run(
            [sys.executable, "-m", "mtbert", "serve", "--checkpoint", str(model_folder), "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert taken.returncode == 2 and f"--port {port}: cannot listen there" in taken.stderr
    finally:
        child.terminate()
        child.wait(timeout=20)

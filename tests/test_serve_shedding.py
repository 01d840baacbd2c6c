"""The server under load, with a slow fake predictor: a full queue answers 503 at once with Retry-After, a request
past its deadline 504, and neither it nor a request whose client went away is computed."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from mtbert.serve.http import Limits, create_app
from mtbert.serve.predictor import Sentiment

from .test_serve import serving


class SlowPredictor:
    """SST only; each batch blocks until `release` is set, and is recorded."""

    tasks = ("sst",)
    device = "cpu"

    def __init__(self):
        self.batches: list[list[str]] = []
        self.release = threading.Event()
        self.running = threading.Event()

    def sentiment(self, texts):
        self.batches.append(list(texts))
        self.running.set()
        self.release.wait(20)
        return [Sentiment(2, "neutral", [0.2] * 5) for _ in texts]


@pytest.fixture()
def serve():
    """Starts the app of a SlowPredictor with the given limits: (base URL, predictor)."""
    with contextlib.ExitStack() as stack:

        def start(limits: Limits):
            predictor = SlowPredictor()
            url = stack.enter_context(serving(create_app(predictor, limits)))
            stack.callback(predictor.release.set)  # (before the server stops: no batch left blocked)
            return url, predictor

        yield start


def post(url: str, texts: list[str]) -> tuple[int, dict, dict]:
    request = urllib.request.Request(
        url + "/sentiment", data=json.dumps({"texts": texts}).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, json.loads(e.read())


def wait_until(condition, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_full_queue_answers_503_at_once_with_retry_after(serve) -> None:
    url, predictor = serve(Limits(max_batch=2, batch_window_ms=0, max_queue=4, request_timeout=30))
    with ThreadPoolExecutor(4) as pool:
        running = pool.submit(post, url, ["a", "b"])  # computed now, blocked in the predictor
        predictor.running.wait(10)
        queued = [pool.submit(post, url, ["c", "d"]), pool.submit(post, url, ["e", "f"])]  # 4 texts wait
        time.sleep(0.5)  # (the two requests reach the queue)
        started = time.monotonic()
        status, headers, body = post(url, ["g"])
        assert status == 503 and time.monotonic() - started < 2  # refused at once, not queued
        assert "at most 4 (max_queue)" in body["detail"] and int(headers["retry-after"]) >= 1
        predictor.release.set()
        assert [f.result()[0] for f in [running, *queued]] == [200, 200, 200]
    assert sorted(t for batch in predictor.batches for t in batch) == list("abcdef")  # "g" never computed
    assert post(url, ["h"])[0] == 200  # the queue drained: served again


def test_a_request_past_its_deadline_answers_504_and_is_not_computed(serve) -> None:
    url, predictor = serve(Limits(max_batch=1, batch_window_ms=0, max_queue=64, request_timeout=0.5))
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(post, url, ["a"])
        predictor.running.wait(10)
        status, _, body = post(url, ["late"])  # waits behind "a", past its deadline
        assert status == 504 and "request_timeout" in body["detail"]
        assert first.result()[0] == 504  # "a" too ran past it (its result is dropped)
    predictor.release.set()
    time.sleep(0.3)
    assert predictor.batches == [["a"]]  # "late" left the queue without being computed
    assert post(url, ["b"])[0] == 200


def test_a_request_whose_client_went_away_is_not_computed(serve) -> None:
    url, predictor = serve(Limits(max_batch=1, batch_window_ms=0, max_queue=64, request_timeout=30))
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(post, url, ["a"])
        predictor.running.wait(10)
        port = int(url.rsplit(":", 1)[1])
        body = json.dumps({"texts": ["gone"]}).encode()
        with socket.create_connection(("127.0.0.1", port)) as s:  # sends its request, then hangs up
            s.sendall(
                b"POST /sentiment HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            time.sleep(0.3)
        time.sleep(0.3)
        predictor.release.set()
        assert first.result()[0] == 200
    assert post(url, ["b"])[0] == 200
    assert predictor.batches == [["a"], ["b"]]  # "gone" was dropped before inference

"""`mtbert synth --generator api`: labelled sentences from an OpenAI-compatible chat-completions endpoint.

Each request asks for --api_batch sentences of one label, shown a few training sentences of that label, and wants
a JSON list of strings back. A failed request (connection error, timeout, HTTP 429 or 5xx, an answer that is not
such a list) is retried --api_retries times, waiting --api_backoff seconds, then twice that, and so on; another
HTTP error (a wrong key, a wrong model name) stops at once. Every answer's sentences are appended to OUT.partial
as they come (flushed to disk), so that a stopped run loses nothing and the same command continues where it was.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from mtbert.data.synthetic import LABEL_WORDS, Row, clean
from mtbert.errors import MtbertError
from mtbert.lab.synth_config import SynthConfig

log = logging.getLogger(__name__)
SHOWN = 5  # training sentences of the label shown in each request


def generate(args: SynthConfig, originals: list[Row], partial: Path) -> list[Row]:
    """--per_class sentences per label (fewer only where answers give fewer), resuming from `partial`."""
    rows = read_partial(partial)
    if rows:
        log.info("%s: continuing from %d sentences received before", partial, len(rows))
    rng = random.Random(args.seed)
    key = os.environ.get(args.api_key_env)
    wanted = args.per_class * len(LABEL_WORDS)
    bar = tqdm(total=wanted, initial=min(len(rows), wanted), desc="asking", unit="sentence")
    for label, words in enumerate(LABEL_WORDS):
        examples = [text for text, y in originals if y == label]
        while (have := sum(y == label for _, y in rows)) < args.per_class:
            n = min(args.api_batch, args.per_class - have)
            prompt = request_text(n, words, rng.sample(examples, min(SHOWN, len(examples))))
            got = ask(args, key, prompt, partial, len(rows))[:n]
            append_partial(partial, [(text, label) for text in got])
            rows += [(text, label) for text in got]
            bar.update(len(got))
    bar.close()
    partial.unlink(missing_ok=True)  # all there: the caller writes the filtered file
    return rows


def request_text(n: int, label_words: str, shown: list[str]) -> str:
    examples = "\n".join(f"- {s}" for s in shown)
    return (
        f"Write {n} new, different sentences from movie reviews whose sentiment is {label_words}, in the style "
        f"of these:\n{examples}\nAnswer with a JSON list of {n} strings and nothing else."
    )


def ask(args: SynthConfig, key: str | None, prompt: str, partial: Path, received: int) -> list[str]:
    """One request's sentences, with retries (see the module's docstring); a final failure is an MtbertError that
    says what was kept."""
    body = json.dumps(
        {
            "model": args.api_model,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": args.temperature,
            "top_p": args.top_p,
        }
    ).encode()
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    url = args.api_base.rstrip("/") + "/chat/completions"
    kept = f"the {received} sentences received so far are in {partial}; the same command continues from them"
    problem = ""
    for attempt in range(args.api_retries + 1):
        if attempt:
            time.sleep(args.api_backoff * 2 ** (attempt - 1))
        try:
            with urllib.request.urlopen(urllib.request.Request(url, body, headers), timeout=args.api_timeout) as r:
                return sentences(r.read())
        except urllib.error.HTTPError as e:
            problem = f"HTTP {e.code} {e.reason}"
            if e.code != 429 and e.code < 500:
                raise MtbertError(
                    f"--api_base {args.api_base}: {problem} ({e.read()[:200].decode(errors='replace')}); {kept}"
                ) from None
        except (urllib.error.URLError, TimeoutError, OSError) as e:
            problem = f"no answer ({getattr(e, 'reason', e)})"
        except ValueError as e:
            problem = f"a malformed answer ({e})"
        log.warning("--api_base %s: %s (try %d of %d)", args.api_base, problem, attempt + 1, args.api_retries + 1)
    raise MtbertError(f"--api_base {args.api_base}: {problem} after {args.api_retries + 1} tries; {kept}")


def sentences(raw: bytes) -> list[str]:
    """The sentences of a chat-completions answer whose message is a JSON list of strings (a ``` fence allowed)."""
    try:
        content = json.loads(raw)["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError, json.JSONDecodeError) as e:
        raise ValueError(f"not a chat-completions answer: {type(e).__name__} {e}") from None
    text = content.strip().removeprefix("```json").removeprefix("```").removesuffix("```").strip()
    try:
        items = json.loads(text)
    except json.JSONDecodeError:
        raise ValueError(f"the message is not a JSON list: {text[:80]!r}") from None
    if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
        raise ValueError(f"the message is not a JSON list of strings: {text[:80]!r}")
    found = [clean(s) for s in items if clean(s)]
    if not found:
        raise ValueError("the list holds no sentences")
    return found


def read_partial(path: Path) -> list[Row]:
    """The sentences a stopped run received: one JSON [sentence, label] per line (a torn last line is dropped)."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            text, label = json.loads(line)
        except (ValueError, TypeError):
            continue
        rows.append((str(text), int(label)))
    return rows


def append_partial(path: Path, rows: list[Row]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.writelines(json.dumps([text, label]) + "\n" for text, label in rows)
        f.flush()
        os.fsync(f.fileno())

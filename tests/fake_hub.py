"""A Hugging Face hub on 127.0.0.1 that serves folders as model repositories (for HF_ENDPOINT), and logs each
request, so that tests resolve hub names without the network and can tell when nothing was asked."""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse


class FakeHub:
    """`repos`: repository id -> folder. Each repository has one commit, named by the hash of its files."""

    def __init__(self, repos: dict[str, Path]):
        self.repos = {name: Path(folder) for name, folder in repos.items()}
        self.requests: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_HEAD(self) -> None:
                hub.answer(self, body=False)

            def do_GET(self) -> None:
                hub.answer(self, body=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def files(self, repo: str) -> list[tuple[str, Path]]:
        """A repository's files (in subfolders too), by their path in it."""
        folder = self.repos[repo]
        return [(f.relative_to(folder).as_posix(), f) for f in sorted(folder.rglob("*")) if f.is_file()]

    def commit(self, repo: str) -> str:
        digest = hashlib.sha1()
        for name, f in self.files(repo):
            digest.update(name.encode() + f.read_bytes())
        return digest.hexdigest()

    def answer(self, handler: BaseHTTPRequestHandler, body: bool) -> None:
        path = unquote(urlparse(handler.path).path)
        self.requests.append(f"{handler.command} {path}")
        for repo, folder in self.repos.items():
            sha = self.commit(repo)
            if path.startswith(f"/api/models/{repo}/revision/"):
                files = [{"rfilename": name, "size": f.stat().st_size} for name, f in self.files(repo)]
                return send(handler, body, json.dumps({"id": repo, "sha": sha, "siblings": files}).encode())
            if path.startswith(f"/api/models/{repo}/tree/"):
                tree = [
                    {"type": "file", "path": name, "size": f.stat().st_size, "oid": blob_id(f)}
                    for name, f in self.files(repo)
                ]
                return send(handler, body, json.dumps(tree).encode())
            if path.startswith(f"/{repo}/resolve/"):
                name = path.split("/resolve/", 1)[1].split("/", 1)[1]
                file = folder / name
                if not file.is_file():
                    break
                headers = {"X-Repo-Commit": sha, "ETag": f'"{blob_id(file)}"'}
                return send(handler, body, file.read_bytes(), "application/octet-stream", headers)
        send(handler, body, b'{"error": "Repository not found"}', status=404, headers={"X-Error-Code": "RepoNotFound"})


def blob_id(file: Path) -> str:
    data = file.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # git's blob id


def send(
    handler: BaseHTTPRequestHandler,
    body: bool,
    data: bytes,
    kind: str = "application/json",
    headers: dict | None = None,
    status: int = 200,
) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", kind)
    handler.send_header("Content-Length", str(len(data)))
    for key, value in (headers or {}).items():
        handler.send_header(key, value)
    handler.end_headers()
    if body:
        handler.wfile.write(data)

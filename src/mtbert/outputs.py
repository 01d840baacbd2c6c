"""Paths a command reads and writes: checked before any work starts, and locked while a run writes them."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

from mtbert.errors import MtbertError


def readable_file(flag: str, path: str | Path) -> Path:
    """`path` as a file to read; a missing path or a folder is an error naming the flag."""
    path = Path(path)
    if path.is_dir():
        raise MtbertError(f"{flag} {path}: is a folder, expected a file")
    if not path.is_file():
        raise MtbertError(f"{flag} {path}: no such file")
    return path


def writable_file(flag: str, path: str | Path) -> Path:
    """`path` as a file to (over)write: not a folder, and inside a folder that exists or can be made, writable."""
    path = Path(path)
    if path.is_dir():
        raise MtbertError(f"{flag} {path}: is a folder, expected a file to write")
    if path.exists() and not os.access(path, os.W_OK):
        raise MtbertError(f"{flag} {path}: the file cannot be written (permissions)")
    writable_dir(flag, path.parent)
    return path


def writable_dir(flag: str, path: str | Path, need_bytes: int = 0) -> Path:
    """`path` as a folder to write in: a folder, or one that can be made, writable, with `need_bytes` free."""
    path = Path(path)
    existing = path
    while not existing.exists():  # the nearest existing folder above is where it will be made
        existing = existing.parent
    if not existing.is_dir():
        raise MtbertError(f"{flag} {path}: {existing} is a file, so no folder can be made there")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise MtbertError(f"{flag} {path}: {existing} cannot be written (permissions)")
    free = shutil.disk_usage(existing).free
    if free < need_bytes:
        raise MtbertError(f"{flag} {path}: {free / 2**20:.0f} MiB free, about {need_bytes / 2**20:.0f} MiB needed")
    return path


def clear_stale(folder: Path, prefix: str) -> None:
    """Removes the temporary files and folders `prefix`* that a crash left in `folder` (a writer holds the lock)."""
    for stale in folder.glob(f"{prefix}*"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


def temp_prefix(path: Path) -> str:
    """The name prefix of `path`'s temporary copies while it is written: `.NAME.tmp-`."""
    return f".{path.name}.tmp-"


def user_permissions(path: Path) -> None:
    """Gives a file or folder (and what a folder holds) the permissions of the user's umask, as open() would, where
    mkdtemp and mkstemp make them private."""
    mask = os.umask(0)
    os.umask(mask)
    for p in [path, *path.rglob("*")] if path.is_dir() else [path]:
        os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~mask)


class Lock:
    """An exclusive lock on a path a run writes (its lock file `.NAME.lock` beside it holds the run's pid and start
    time, for the message of a second run). The operating system releases it when the process ends, however it
    ends, so a dead run's lock is simply taken over. Released, the lock file is removed, and so are the folders
    acquiring it created (if still empty): a run that stops early leaves nothing behind."""

    def __init__(self, flag: str, path: str | Path):
        self.flag, self.path = flag, Path(path)
        self.file = self.path.parent / f".{self.path.name}.lock"
        self.fd: int | None = None
        self.created: list[Path] = []  # folders made for the lock file, deepest first

    def acquire(self) -> None:
        missing = [p for p in [self.file.parent, *self.file.parent.parents] if not p.exists()]
        self.file.parent.mkdir(parents=True, exist_ok=True)
        self.created = missing
        while True:
            fd = os.open(self.file, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                holder = os.read(fd, 200).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                raise MtbertError(
                    f"{self.flag} {self.path}: in use by another run ({holder}); wait for it to end, or choose "
                    "another path"
                ) from None
            try:  # the file locked is still the lock file (not one a releasing run removed meanwhile)
                if os.stat(self.file).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}".encode())
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.file)  # while still held: a run waiting on this file sees it gone and opens anew
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
            for folder in self.created:
                with contextlib.suppress(OSError):  # (not empty: the run wrote there)
                    folder.rmdir()


def lock_all(paths: list[tuple[str, Path]]) -> contextlib.ExitStack:
    """Locks every (flag, path) in turn; the returned stack releases them. Stops at the first one in use."""
    stack = contextlib.ExitStack()
    try:
        for flag, path in paths:
            lock = Lock(flag, path)
            lock.acquire()
            stack.callback(lock.release)
    except BaseException:
        stack.close()
        raise
    return stack


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Writes a file so that a crash leaves either the old or the new content, never a half-written file; the
    temporary copy a crash left behind is removed on the next write."""
    clear_stale(path.parent, temp_prefix(path))
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(path))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        user_permissions(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def parse_mapping(path: Path, text: str) -> dict:
    """A config file's top-level mapping: JSON for a .json file, else YAML (a byte-order mark dropped). A key given
    twice in one mapping is an error naming the file, the line and the key."""
    text = text.removeprefix("\ufeff")
    if path.suffix == ".json":

        def unique(pairs: list[tuple[str, object]]) -> dict:
            seen: set[str] = set()
            for key, _ in pairs:
                if key in seen:  # the line of its second appearance
                    found = [m.start() for m in re.finditer(rf'"{re.escape(key)}"\s*:', text)]
                    line = text.count("\n", 0, found[1]) + 1 if len(found) > 1 else "?"
                    raise MtbertError(f"{path}:{line}: {key!r} is given twice")
                seen.add(key)
            return dict(pairs)

        try:
            settings = json.loads(text, object_pairs_hook=unique)
        except json.JSONDecodeError as e:
            raise MtbertError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    else:
        import yaml  # PyYAML, a dependency of mtbert (and of transformers)

        try:
            settings = yaml.load(text, Loader=unique_keys_loader(path))  # a SafeLoader
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
            problem = " ".join(str(getattr(e, "problem", None) or e).split())  # PyYAML's messages span lines
            raise MtbertError(f"{where}: not valid YAML ({problem})") from None
    if not isinstance(settings, dict):
        raise MtbertError(f"{path}: expected a mapping of settings (`lr: 1e-4`), got {type(settings).__name__}")
    return settings


def unique_keys_loader(path: Path):  # -> a yaml.SafeLoader subclass
    """PyYAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the last one silently)."""
    import yaml

    class UniqueKeys(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    raise MtbertError(f"{path}:{key_node.start_mark.line + 1}: {key!r} is given twice")
                seen.add(key)
            return super().construct_mapping(node, deep)

    return UniqueKeys

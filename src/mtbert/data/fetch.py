"""Fetching the data sets: downloaded from a URL or copied from a local folder, each file validated before it lands."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import urllib.request
from collections.abc import Callable
from pathlib import Path

from mtbert.errors import MtbertError

log = logging.getLogger(__name__)

# The original project's data files (the Göttingen DNLP "Multitask BERT" repository's data/ folder); the CS224N
# release (https://raw.githubusercontent.com/gpoesia/minbert-default-final-project/main/data) has other test files.
PUBLIC_DATA_URL = "https://raw.githubusercontent.com/token-tricksters/deep-learning-nlp/main/data"


def fetch(
    files: dict[str, Callable[[Path], object]], source: str | None, dest: Path, progress: bool = True
) -> list[Path]:
    """Copies (from a folder) or downloads (from a URL) each named file into `dest`, validating it before it lands.

    `files` maps a file name to a validator that raises MtbertError on a malformed file. A file that is absent
    from a local mirror is skipped with a warning (some mirrors lack the Quora test file).
    """
    dest.mkdir(parents=True, exist_ok=True)
    src = source or os.environ.get("MTBERT_DATA_URL") or PUBLIC_DATA_URL  # the variable names a mirror
    is_url = "://" in src
    written = []
    with tempfile.TemporaryDirectory(dir=dest, prefix=".fetch-") as staging:
        for name, validate in files.items():
            # staged under its own name, so that validation messages name the file as the user knows it
            staged = Path(staging) / name
            if is_url:
                _download(f"{src.rstrip('/')}/{name}", staged, progress)
            else:
                origin = Path(src) / name
                if not origin.is_file():
                    log.warning("%s: not in %s, skipped", name, src)
                    continue
                shutil.copyfile(origin, staged)
            try:
                validate(staged)
            except MtbertError as e:
                raise MtbertError(str(e).replace(str(staged), f"{src.rstrip('/')}/{name}")) from e
            os.replace(staged, dest / name)
            written.append(dest / name)
    return written


def _download(url: str, to: Path, progress: bool) -> None:
    from tqdm import tqdm

    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(to, "wb") as f:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=url.rsplit("/", 1)[-1], disable=not progress) as bar:
                while chunk := response.read(1 << 16):
                    f.write(chunk)
                    bar.update(len(chunk))
    except OSError as e:  # URLError and HTTPError are OSErrors
        to.unlink(missing_ok=True)
        raise MtbertError(
            f"{url}: download failed ({e}); to use a local copy of the data: mtbert data fetch --source DIR "
            "(make train DATA_SOURCE=DIR)"
        ) from e

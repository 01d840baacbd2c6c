"""--model by hub name: resolved through a hub on 127.0.0.1 into a temporary cache, then offline from the cache."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mtbert.cli import main
from mtbert.errors import MtbertError
from mtbert.inference.saved import load_model
from mtbert.model.hub import is_hub_name, resolve
from mtbert.train.setup import run_name

from .conftest import toy_config
from .fake_hub import FakeHub


@pytest.fixture()
def hub_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache of this test's own (HF_HOME), online."""
    home = tmp_path / "hf-home"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return home


def test_hub_names_and_paths_are_told_apart() -> None:
    for name in ("bert-base-uncased", "org/name", "org/name@v1.0", "sentence-transformers/all-MiniLM-L6-v2@main"):
        assert is_hub_name(name)
    for path in ("./models/best", "/tmp/x", "~/m", "a/b/c", "models\\best", "a b"):
        assert not is_hub_name(path)


def test_a_missing_local_path_is_not_looked_up_on_the_hub(tmp_path: Path, hub_env: Path) -> None:
    with pytest.raises(MtbertError, match="no such checkpoint folder"):
        resolve(str(tmp_path / "nope"))


def test_hub_name_downloads_once_then_resolves_offline(tiny_checkpoint: Path, hub_env: Path, monkeypatch) -> None:
    with FakeHub({"acme/tiny-bert": tiny_checkpoint}) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        first = resolve("acme/tiny-bert")
        assert first.name == "acme/tiny-bert" and first.revision == hub.commit("acme/tiny-bert")
        assert first.folder.is_relative_to(hub_env)  # in the temporary cache, not ~/.cache
        assert (first.folder / "config.json").read_bytes() == (tiny_checkpoint / "config.json").read_bytes()
        assert (first.folder / "model.safetensors").is_file() and (first.folder / "vocab.txt").is_file()
        assert any(r.startswith("GET /acme/tiny-bert/resolve/") for r in hub.requests)
        asked = len(hub.requests)
        again = resolve("acme/tiny-bert", local_files_only=True)
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        offline = resolve("acme/tiny-bert")
        assert again == offline == first
        assert len(hub.requests) == asked  # both from the cache: not one request
        monkeypatch.delenv("HF_HUB_OFFLINE")
        with pytest.raises(MtbertError, match="no such model on the Hugging Face hub"):
            resolve("acme/missing")


def test_local_files_only_with_an_empty_cache_exits_2_naming_the_model(hub_env: Path, capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["train", "--model", "acme/tiny-bert@v2", "--local_files_only", "--smoketest"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "acme/tiny-bert@v2" in err and "not in the Hugging Face cache" in err and "--local_files_only" in err
    assert "Traceback" not in err


def test_a_model_trained_from_a_hub_name_records_it(
    tmp_path: Path, toy_data: Path, tiny_checkpoint: Path, hub_env: Path, monkeypatch
) -> None:
    from mtbert.fitting import fit

    with FakeHub({"acme/tiny-bert": tiny_checkpoint}) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        cfg = toy_config(tmp_path, toy_data, tiny_checkpoint, epochs=1).updated(model="acme/tiny-bert@main")
        fit(cfg)
        commit = hub.commit("acme/tiny-bert")
    folder = Path(cfg.save_dir) / run_name(cfg)
    model, _, meta = load_model(folder)
    assert meta["source"] == {"model": "acme/tiny-bert", "revision": commit} == model.source
    assert meta["config"]["model"] == "acme/tiny-bert@main"
    # the cache is all it needs from now on: the hub is gone, the same name still trains
    shutil.rmtree(cfg.save_dir)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    fit(cfg)
    assert json.loads((Path(cfg.save_dir) / run_name(cfg) / "mtbert.json").read_text())["source"]["revision"] == commit


def test_a_checkpoint_with_only_pytorch_weights_is_fetched_with_them(tmp_path, tiny_checkpoint, hub_env, monkeypatch):
    import torch
    from safetensors.torch import load_file

    from mtbert.model.hf import load_encoder

    old = tmp_path / "old-style"
    shutil.copytree(tiny_checkpoint, old)
    torch.save(load_file(old / "model.safetensors"), old / "pytorch_model.bin")
    (old / "model.safetensors").unlink()
    with FakeHub({"acme/old-bert": old}) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        found = resolve("acme/old-bert")
    assert (found.folder / "pytorch_model.bin").is_file()
    expected = load_encoder(tiny_checkpoint).state_dict()
    for key, value in load_encoder(found.folder).state_dict().items():
        assert torch.equal(value, expected[key])

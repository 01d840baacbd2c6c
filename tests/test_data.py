import os
import subprocess
import sys

import numpy as np
import pytest

from mtbert.cli import main
from mtbert.data.fetch import fetch
from mtbert.data.files import read_examples
from mtbert.data.sampler import MultitaskSampler, task_shares
from mtbert.model.tasks import TASKS

from .conftest import REPO, write_csv

STS_HEADER = ["id", "sentence1", "sentence2", "similarity"]


def read_sts(path):
    spec = TASKS["sts"]
    return read_examples(path, spec.text_columns, spec.label_column, spec.parse_label, require_labels=True)


def fetch_error(tmp_path, capsys, name: str) -> str:
    """Runs `mtbert data fetch` on a mirror folder and returns its one-line error (exit code 2 asserted)."""
    with pytest.raises(SystemExit) as e:
        main(["data", "fetch", "--source", str(tmp_path / "src"), "--dest", str(tmp_path / "dest")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err and name in err
    assert not (tmp_path / "dest" / name).exists(), "a bad file must not land"
    return err


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "the file is empty"),
        (b"\tid\tsentence1\tsentence2\n0\ta\tb\tc\n", ":1: missing column 'similarity'"),
        (
            b"\tid\tsentence1\tsentence2\tsimilarity\n0\ta\tx\ty\t1.0\n1\tb\tx\ty\t7.5\n",
            ":3: similarity '7.5': expected",
        ),
        (
            b"\tid\tsentence1\tsentence2\tsimilarity\n0\ta\tx\ty\t1.0\n1\tb\tx\ty\thigh\n",
            ":3: similarity 'high': not a number",
        ),
        (b"\tid\tsentence1\tsentence2\tsimilarity\n0\ta\tx\ty\t1.0\n1\tb\tx\xff\xfey\t2.0\n", ":3: not UTF-8"),
    ],
    ids=["empty", "missing-column", "out-of-range", "non-numeric", "non-utf8"],
)
def test_malformed_file_stops_with_file_and_line(tmp_path, capsys, content: bytes, expected: str) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "sts-train.csv").write_bytes(content)
    err = fetch_error(tmp_path, capsys, "sts-train.csv")
    assert expected in err


@pytest.mark.slow
def test_missing_file_in_training_names_it_without_traceback(tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mtbert", "train", "--data_dir", str(tmp_path), "--sst"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "ids-sst-train.csv: no such file" in result.stderr and "Traceback" not in result.stderr


def test_sst_label_out_of_range(tmp_path) -> None:
    path = write_csv(tmp_path / "s.csv", ["id", "sentence", "sentiment"], [("a", "good", 3), ("b", "bad", 5)])
    spec = TASKS["sst"]
    with pytest.raises(ValueError, match=r"s\.csv:3: sentiment '5': expected a class 0..4"):
        read_examples(path, spec.text_columns, spec.label_column, spec.parse_label, True)


def test_rows_without_label_are_skipped_and_counted(tmp_path, caplog) -> None:
    path = write_csv(tmp_path / "s.csv", STS_HEADER, [("a", "x", "y", 1.0), ("b", "x", "", ""), ("c", "u", "v", "")])
    examples = read_sts(path)
    assert examples.ids == ["a"] and examples.labels.tolist() == [1.0]
    assert "skipped 2 row(s) without a similarity label" in caplog.text


def test_csv_quoting_is_understood(tmp_path) -> None:
    path = tmp_path / "s.csv"
    path.write_text('\tid\tsentence1\tsentence2\tsimilarity\n0\ta\t"""quoted"" text"\tplain\t2.0\n')
    assert read_sts(path).texts[0] == ['"quoted" text']


def test_real_files_read_with_their_bad_row_skipped(data_dir) -> None:
    spec = TASKS["para"]
    dev = read_examples(data_dir / "quora-dev.csv", spec.text_columns, spec.label_column, spec.parse_label, True)
    assert len(dev) == 3927 and set(np.unique(dev.labels)) == {0.0, 1.0}


def test_sampler_draws_without_replacement_and_is_reproducible() -> None:
    sampler = MultitaskSampler({"big": 100, "small": 30}, samples_per_epoch=50, batch_size=16, seed=1)
    steps = list(sampler.epoch(0))
    assert len(steps) == len(sampler) == 4
    big = np.concatenate([s["big"] for s in steps])
    assert len(big) == 50 and len(set(big.tolist())) == 50
    small = np.concatenate([s["small"] for s in steps])
    assert len(set(small[:30].tolist())) == 30, "a small task is cycled through whole permutations"
    assert all((a["big"] == b["big"]).all() for a, b in zip(steps, sampler.epoch(0), strict=True))
    assert not all((a["big"] == b["big"]).all() for a, b in zip(steps, sampler.epoch(1), strict=True))


def test_task_shares_follow_the_training_sizes() -> None:
    sizes = {"a": 900, "b": 100}
    assert task_shares(sizes, "equal") == {"a": 0.5, "b": 0.5}
    assert task_shares(sizes, "proportional") == pytest.approx({"a": 0.9, "b": 0.1})
    assert task_shares(sizes, "sqrt") == pytest.approx({"a": 0.75, "b": 0.25})  # 30 : 10
    assert task_shares(sizes, "annealed", epoch=0, epochs=5) == pytest.approx({"a": 0.9, "b": 0.1})
    last = 900**0.2 / (900**0.2 + 100**0.2)  # a = 1 - 0.8 at the last epoch
    assert task_shares(sizes, "annealed", epoch=4, epochs=5) == pytest.approx({"a": last, "b": 1 - last})


def test_sampling_draws_each_task_its_share_in_every_step() -> None:
    sizes = {"big": 900, "small": 100}
    sampler = MultitaskSampler(sizes, samples_per_epoch=200, batch_size=16, seed=1, sampling="sqrt")
    steps = list(sampler.epoch(0))
    assert len(steps) == len(sampler) == 13  # the steps of an equal draw
    drawn = {t: np.concatenate([s[t] for s in steps]) for t in sizes}
    assert {t: len(d) for t, d in drawn.items()} == {"big": 300, "small": 100}  # 400 examples, 3 : 1
    assert len(set(drawn["big"].tolist())) == 300, "without replacement within the epoch"
    assert all(len(s["big"]) in (23, 24) and len(s["small"]) in (7, 8) for s in steps)  # spread evenly
    assert sampler.loss_scales(0) == {"big": 1.5, "small": 0.5}
    equal = MultitaskSampler(sizes, samples_per_epoch=200, batch_size=16, seed=1)
    assert equal.loss_scales(0) == {"big": 1.0, "small": 1.0}
    assert [len(s["small"]) for s in equal.epoch(0)] == [16] * 12 + [8]  # batches of --batch_size, as before


def test_fetch_copies_a_local_mirror_and_validates_it(tmp_path, toy_data) -> None:
    validators = {"sts-train.csv": read_sts, "sts-dev.csv": read_sts, "absent.csv": read_sts}
    written = fetch(validators, str(toy_data), tmp_path / "out", progress=False)
    assert [p.name for p in written] == ["sts-train.csv", "sts-dev.csv"]
    assert (tmp_path / "out" / "sts-dev.csv").read_bytes() == (toy_data / "sts-dev.csv").read_bytes()


def test_fetch_downloads_from_a_url(tmp_path, toy_data) -> None:
    written = fetch({"sts-train.csv": read_sts}, toy_data.as_uri(), tmp_path / "out", progress=False)
    assert written == [tmp_path / "out" / "sts-train.csv"]
    with pytest.raises(ValueError, match="download failed"):
        fetch({"absent.csv": read_sts}, toy_data.as_uri(), tmp_path / "out", progress=False)


def test_data_fetch_downloads_every_file_over_http(tmp_path, http_data, capsys) -> None:
    url, requests = http_data
    main(["data", "fetch", "--source", url, "--dest", str(tmp_path / "out")])
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert len(names) == 9 and "quora-test-student.csv" in names
    assert len(requests) == 9 and capsys.readouterr().out.count("ok ") == 9


@pytest.mark.slow
def test_make_fetches_the_data_when_there_is_no_local_copy(tmp_path, http_data) -> None:
    """`make data` without ../shared/data downloads the files once (here from a local server standing in for the
    original project's repository) and validates them; offline it stops with one line on how to use a local copy."""
    url, requests = http_data
    out = tmp_path / "out"
    make = [
        "make",
        "-s",
        "-C",
        str(REPO),
        "data",
        "STAMP=",
        f"PY={sys.executable}",
        f"SHARED_DATA={tmp_path}/none",
        f"DATA_DIR={out}",
    ]
    env = {**os.environ, "MTBERT_DATA_URL": url}  # the default source, moved to the local server
    for _ in range(2):  # the second run finds the data fetched
        done = subprocess.run(make, capture_output=True, text=True, timeout=120, env=env)
        assert done.returncode == 0, done.stderr
    assert len(list(out.glob("*.csv"))) == 9 and len(requests) == 9
    env["MTBERT_DATA_URL"] = "http://127.0.0.1:9/data"  # nothing listens there
    offline = subprocess.run([*make, f"DATA_DIR={tmp_path}/out2"], capture_output=True, text=True, timeout=120, env=env)
    assert offline.returncode != 0
    errors = [line for line in offline.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "download failed" in errors[0] and "--source DIR" in errors[0], offline.stderr
    assert "Traceback" not in offline.stderr

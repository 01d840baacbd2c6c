import json

import numpy as np
import pytest
import torch

from mtbert import encode
from mtbert.cli import main
from mtbert.model.hf import default_checkpoint
from mtbert.serve.embedding import mean_pool


@pytest.mark.slow
def test_encode_equals_sentence_transformers(data_dir) -> None:
    from sentence_transformers import SentenceTransformer

    from mtbert.data.files import read_examples

    sentences = read_examples(data_dir / "sts-dev.csv", ("sentence1",), "-", float, False).texts[0][:200]
    ours = encode(sentences, batch_size=32, device="cpu")
    theirs = SentenceTransformer(str(default_checkpoint()), device="cpu").encode(sentences, batch_size=32)
    assert ours.shape == theirs.shape == (200, 384)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_encode_keeps_input_order_and_accepts_a_folder(tiny_checkpoint) -> None:
    sentences = ["the film is great and the actors are fine", "dull", "a movie"]
    all_at_once = encode(sentences, model=tiny_checkpoint, device="cpu")
    one_by_one = np.concatenate([encode([s], model=tiny_checkpoint, device="cpu") for s in sentences])
    np.testing.assert_allclose(all_at_once, one_by_one, atol=1e-5)


def test_mean_pool_ignores_padding() -> None:
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    assert mean_pool(hidden, torch.tensor([[1, 1, 0]])).tolist() == [[2.0, 3.0]]


def test_encode_command_reads_arguments_or_a_file(tiny_checkpoint, tmp_path, capsys) -> None:
    sentences = ["the film is great", "dull", "a movie"]
    main(["encode", "--model", str(tiny_checkpoint), *sentences])
    from_args = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    (tmp_path / "s.txt").write_text("\n".join(sentences) + "\n\n")  # blank lines are skipped
    main(["encode", "--model", str(tiny_checkpoint), "--input", str(tmp_path / "s.txt")])
    assert [json.loads(line) for line in capsys.readouterr().out.splitlines()] == from_args
    assert len(from_args) == 3 and len(from_args[0]) == 32  # TINY's hidden size
    bad = {
        "as arguments or with --input": ["encode"],
        "one of the two": ["encode", "x", "--input", "f"],
        "none.txt: no such file": ["encode", "--input", str(tmp_path / "none.txt")],
    }
    for message, argv in bad.items():
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2 and message in capsys.readouterr().err

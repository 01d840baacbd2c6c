import pytest

from mtbert import Tokenizer
from mtbert.data.files import read_examples
from mtbert.model.tasks import TASKS


@pytest.mark.parametrize("task", ["sst", "para", "sts"])
def test_ids_equal_transformers_on_every_dev_sentence(tokenizers, data_dir, task: str) -> None:
    ours, theirs = tokenizers
    spec = TASKS[task]
    texts = read_examples(data_dir / spec.files["dev"], spec.text_columns, "-", float, require_labels=False).texts
    for column in texts:
        assert ours.encode_ids(column) == theirs(column)["input_ids"]
    if len(texts) == 2:
        batch = ours(texts[0], texts[1])
        ref = theirs(texts[0], texts[1], padding=True, return_tensors="pt")
        for key in ("input_ids", "token_type_ids", "attention_mask"):
            assert batch[key].tolist() == ref[key].tolist(), key


def test_pair_layout_and_truncation(tiny_checkpoint) -> None:
    tok = Tokenizer.from_pretrained(tiny_checkpoint)
    batch = tok(["the film"], ["a movie"])
    cls, sep = tok._tok.token_to_id("[CLS]"), tok._tok.token_to_id("[SEP]")
    ids = batch["input_ids"][0].tolist()
    assert ids[0] == cls and ids.count(sep) == 2 and ids[-1] == sep
    assert batch["token_type_ids"][0].tolist() == [0, 0, 0, 0, 1, 1, 1]
    tok.set_max_length(4)
    assert [len(x) for x in tok.encode_ids(["the film is great good bad"])] == [4]


def test_lowercasing_follows_the_checkpoint(tiny_checkpoint, tmp_path) -> None:
    tok = Tokenizer.from_pretrained(tiny_checkpoint)
    assert tok.encode_ids(["THE Film"]) == tok.encode_ids(["the film"])
    tok.save(tmp_path)
    again = Tokenizer.from_pretrained(tmp_path)
    assert again.encode_ids(["THE Film"]) == tok.encode_ids(["the film"]) and again.max_length == tok.max_length


def test_missing_vocabulary_is_a_clear_error(tmp_path) -> None:
    from mtbert.errors import MtbertError

    with pytest.raises(MtbertError, match=r"no vocab\.txt or tokenizer\.json"):
        Tokenizer.from_pretrained(tmp_path)

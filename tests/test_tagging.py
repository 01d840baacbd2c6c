"""POS/NER tags (--additional_input): alignment to word pieces on hard cases of the data, the disk cache, the zero
start of the tag embeddings, and training, evaluation and prediction with tags."""

import json
from copy import deepcopy
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import mtbert.data.tagging
from mtbert.cli import main
from mtbert.config import Config
from mtbert.data.tagging import Tagger
from mtbert.errors import MtbertError
from mtbert.fitting import fit
from mtbert.inference.saved import load_model
from mtbert.model.encoder import BertEncoder, EncoderConfig
from mtbert.model.multitask import MultitaskModel
from mtbert.model.tokenizer import Tokenizer

from .conftest import TINY

# Hard cases, as the data writes them (PTB tokenisation: -LRB-, ``, '', n't, 's)
HARD = [
    "It does n't matter , and they 're not John 's friends .",  # contractions, possessive
    "A well-made , 3.5-million-dollar -LRB- roughly -RRB- film from 1999 .",  # hyphens, numbers, brackets
    "`` It 's a sure bet , '' said Mr. O'Neill in New York .",  # PTB quotes, names
    "Crème brûlée à São Paulo : naïve café ☕ über-cool",  # accents and non-ASCII
    "",  # an empty string
    " ".join(["word"] * 300),  # longer than --max_length
]


@pytest.fixture(scope="module")
def tagger(tmp_path_factory) -> Tagger:
    return Tagger(tmp_path_factory.mktemp("tags"))


def test_every_word_piece_gets_its_words_tags_and_specials_their_own(tagger: Tagger) -> None:
    tokenizer = Tokenizer.from_pretrained()
    tokenizer.set_max_length(128)
    ids, offsets = tokenizer.encode_offsets(HARD)
    tags = tagger.tag_ids(HARD, offsets)
    pos_names, ner_names = tagger.vocab.pos, tagger.vocab.ner
    for text, sentence_ids, spans, (pos, ner), words in zip(HARD, ids, offsets, tags, tagger.words(HARD), strict=True):
        assert len(pos) == len(ner) == len(sentence_ids) <= 128
        assert (pos_names[pos[0]], pos_names[pos[-1]]) == ("[CLS]", "[SEP]")
        assert (ner_names[ner[0]], ner_names[ner[-1]]) == ("[CLS]", "[SEP]")
        for (start, end), p, n in zip(spans[1:-1], pos[1:-1], ner[1:-1], strict=True):
            word = next(w for w in words if w[0] <= start < w[1])  # the spaCy word holding the piece's first char
            assert (pos_names[p], ner_names[n]) == (word[2], word[3]), (text, text[start:end], word)
    pieces = [tokenizer._tok.id_to_token(i) for i in ids[0]]
    at = pieces.index("n")
    assert pieces[at : at + 3] == ["n", "'", "t"] and {pos_names[p] for p in tags[0][0][at : at + 3]} == {"RB"}
    assert "B-PERSON" in [ner_names[n] for n in tags[0][1]]  # John
    assert len(ids[4]) == 2 and len(tags[4][0]) == 2  # the empty string: [CLS] [SEP]


def test_a_second_pass_calls_spacy_zero_times(tmp_path: Path) -> None:
    first = Tagger(tmp_path)
    first.words(HARD)
    assert first.calls == len(set(HARD))
    first.words(HARD)
    again = Tagger(tmp_path)  # another run, same cache folder
    assert again.words(HARD) == first.words(HARD)
    assert first.calls == len(set(HARD)) and again.calls == 0


def test_a_damaged_cache_file_is_named_and_rebuilt(tmp_path: Path, caplog) -> None:
    Tagger(tmp_path).words(HARD[:2])
    part = next(tmp_path.glob("*/part-*.jsonl"))
    part.write_text(part.read_text()[:25])  # cut mid-entry, as a crash would
    tagger = Tagger(tmp_path)
    assert f"{part}: damaged tag cache file" in caplog.text
    tagger.words(HARD[:2])
    assert tagger.calls == 2 and Tagger(tmp_path).words(HARD[:2]) == tagger.words(HARD[:2])


@pytest.mark.slow
def test_many_runs_adding_to_the_cache_are_merged(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(mtbert.data.tagging, "MERGE_PARTS", 3)
    for i in range(6):
        Tagger(tmp_path).words([f"sentence number {i}"])
    assert len(list(tmp_path.glob("*/part-*.jsonl"))) <= 4
    assert Tagger(tmp_path).words([f"sentence number {i}" for i in range(6)]) and Tagger(tmp_path).calls == 0


def test_without_spacy_a_filled_cache_serves_and_a_missing_sentence_is_one_line(tmp_path: Path, monkeypatch) -> None:
    filled = Tagger(tmp_path).words(HARD[:3])

    def no_spacy():
        raise MtbertError("--additional_input tags sentences with spaCy: pip install 'mtbert[tagging]'")

    monkeypatch.setattr(mtbert.data.tagging, "load_spacy", no_spacy)
    offline = Tagger(tmp_path)
    assert offline.words(HARD[:3]) == filled
    with pytest.raises(MtbertError, match=r"pip install 'mtbert\[tagging\]'"):
        offline.words(["a sentence never tagged"])
    with pytest.raises(MtbertError, match="pip install"):
        Tagger(tmp_path / "empty")  # no spaCy and no cache


def test_zero_initialised_tag_embeddings_leave_the_outputs_exactly_unchanged(tagger: Tagger) -> None:
    torch.manual_seed(0)
    model = MultitaskModel(BertEncoder(EncoderConfig(**TINY)), ("sst", "sts"), 0.0).eval()
    tagged = deepcopy(model)
    tagged.add_tags(tagger.vocab.to_dict())
    g = torch.Generator().manual_seed(1)
    sentences = [torch.randint(5, TINY["vocab_size"], (n,), generator=g).tolist() for n in (3, 9, 5, 5)]
    tags = [([3 + i % 7] * len(s), [4 + i % 5] * len(s)) for i, s in enumerate(sentences)]
    assert torch.equal(tagged.embed(sentences, tags=tags), model.embed(sentences))
    with torch.no_grad():
        tagged.tags.pos.weight.normal_()
    assert not torch.equal(tagged.embed(sentences, tags=tags), model.embed(sentences))


@pytest.mark.slow
def test_training_evaluation_and_prediction_with_tags(cfg: Config, tmp_path: Path, capsys) -> None:
    run = replace(cfg, epochs=3, additional_input=True, tag_cache=str(tmp_path / "tags"))
    best = fit(run)
    folder = Path(cfg.save_dir) / "finetune-3-0.003-adamw-none-multitask"
    model, _, meta = load_model(folder)
    assert meta["tags"]["pos"][:3] == ["[PAD]", "[CLS]", "[SEP]"] and "B-PERSON" in meta["tags"]["ner"]
    assert model.tags is not None and model.tags.pos.weight.abs().sum() > 0  # the tag embeddings trained
    main(
        [
            "evaluate",
            "--checkpoint",
            str(folder),
            "--data_dir",
            cfg.data_dir,
            "--precision",
            "fp32",
            "--tag_cache",
            run.tag_cache,
        ]
    )
    assert json.loads(capsys.readouterr().out)["mean"] == pytest.approx(best["mean"])
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("a man plays guitar\ta man plays the guitar\n")
    main(["predict", "--checkpoint", str(folder), "--task", "sts", "--input", str(pairs), "--tag_cache", run.tag_cache])
    assert len(capsys.readouterr().out.splitlines()) == 2
    with pytest.raises(MtbertError, match="trained with tag embeddings: add --additional_input"):
        fit(replace(cfg, model=None, checkpoint=str(folder), epochs=1))


def test_additional_input_refuses_the_gpu_speed_modes(cfg: Config) -> None:
    with pytest.raises(ValueError, match="--additional_input works with the default passes"):
        replace(cfg, additional_input=True, unpad=True)


def test_piece_tags_against_an_alignment_made_without_the_tokenizers_offsets(tagger: Tagger) -> None:
    """An independent oracle: each word piece found by searching its text in the sentence (not the tokenizer's
    offsets), and its word found by spaCy itself (not the tagger's cached words)."""
    import spacy

    from mtbert.data.tagging import SPACY_MODEL

    nlp = spacy.load(SPACY_MODEL, exclude=["parser", "lemmatizer"])
    tokenizer = Tokenizer.from_pretrained()
    texts = HARD[:3]  # ASCII sentences: the lower-cased text holds each piece's characters as they are
    ids, offsets = tokenizer.encode_offsets(texts)
    tags = tagger.tag_ids(texts, offsets)
    pos_names, ner_names = tagger.vocab.pos, tagger.vocab.ner
    for text, sentence_ids, (pos, ner) in zip(texts, ids, tags, strict=True):
        doc, lowered, at = nlp(text), text.lower(), 0
        for piece_id, p, n in zip(sentence_ids[1:-1], pos[1:-1], ner[1:-1], strict=True):
            piece = tokenizer._tok.id_to_token(piece_id).removeprefix("##")
            start = lowered.index(piece, at)
            at = start + len(piece)
            word = next(t for t in doc if t.idx <= start < t.idx + len(t.text))
            entity = "O" if word.ent_iob_ in ("O", "") else f"{word.ent_iob_}-{word.ent_type_}"
            assert (pos_names[p], ner_names[n]) == (word.tag_, entity), (text, piece, word.text)

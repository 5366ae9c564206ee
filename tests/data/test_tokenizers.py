"""Tokenizers by name: ids, CLIP's and SigLIP's layouts, cutting, padding, round trips, errors.

The CLIP and SigLIP tests build tiny vocabularies with the `tokenizers` and `sentencepiece`
packages (the `text` extra) and are skipped where those are not installed."""

import io
import json
import pathlib
import pickle

import numpy as np
import pytest

from jaxvision.data import shapes_captions
from jaxvision.data.tokenizers import TOKENIZERS, WordTokenizer, make_tokenizer, split_words
from jaxvision.errors import UserError


def test_word_ids_and_clip_layout():
    tokenizer = WordTokenizer(["a", "red", "star"], length=8)
    assert (tokenizer.pad_id, tokenizer.UNK, tokenizer.bos_id, tokenizer.eos_id) == (0, 1, 5, 6)
    assert tokenizer.vocab_size == 7
    assert split_words("A red-Star.") == ["a", "red", "star"]
    assert split_words("Café's 2 naïve\tÉTÉ") == ["café's", "2", "naïve", "été"]
    assert tokenizer.encode("A red-Star.") == [2, 3, 4]
    assert tokenizer.encode("a blue star") == [2, 1, 4]  # an unknown word is UNK
    ids = tokenizer("a red star")
    assert ids.dtype == np.int32 and ids.tolist() == [5, 2, 3, 4, 6, 0, 0, 0]
    assert int(np.argmax(ids)) == 4  # EOT has the largest id: argmax pools there
    assert tokenizer.decode(ids) == "a red star"
    assert tokenizer.decode(tokenizer("a blue star")) == "a <unk> star"
    # Too long: cut, still ending with EOT; a batch of texts is [B, length].
    long = tokenizer("a red star " * 5)
    assert long.tolist() == [5, 2, 3, 4, 2, 3, 4, 6]
    batch = tokenizer(["a", "star star"])
    assert batch.shape == (2, 8) and batch[:, 0].tolist() == [5, 5]
    assert tokenizer([]).shape == (0, 8)
    assert pickle.loads(pickle.dumps(tokenizer))("red").tolist() == tokenizer("red").tolist()


def test_word_vocabularies_by_name(tmp_path):
    assert set(TOKENIZERS.names()) >= {"words", "shapes_words", "clip_bpe", "siglip_spm"}
    shapes = make_tokenizer("shapes_words", length=16)
    assert shapes.words == shapes_captions.VOCABULARY and shapes.vocab_size == 22
    text = "a small orange star right of a large blue circle"
    assert shapes.decode(shapes(text)) == text and shapes.UNK not in shapes(text)
    vocabulary = tmp_path / "words.txt"
    vocabulary.write_text("star\n\nred\na\n")
    words = make_tokenizer("words", length=6, path=str(vocabulary))
    assert words.words == ("star", "red", "a") and words("a red star").tolist()[:5] == [
        5,
        4,
        3,
        2,
        6,
    ]
    built = WordTokenizer.from_texts(["the red star", "A red circle"], length=4)
    assert built.words == ("a", "circle", "red", "star", "the")
    assert WordTokenizer.from_texts(["A red circle", "the red star"]).words == built.words


def test_word_errors(tmp_path):
    with pytest.raises(UserError, match="tokenizer 'words' needs a vocabulary file"):
        make_tokenizer("words", length=8)
    with pytest.raises(UserError, match=r"vocabulary file .*nope.txt not found"):
        make_tokenizer("words", length=8, path=str(tmp_path / "nope.txt"))
    with pytest.raises(UserError, match="vocabulary words listed twice: red"):
        WordTokenizer(["red", "star", "red"])
    with pytest.raises(UserError, match="'Red Star' are not single lower-case words"):
        WordTokenizer(["Red Star"])
    with pytest.raises(UserError, match="text length must be at least 2"):
        WordTokenizer(["red"], length=1)
    with pytest.raises(UserError, match="unknown tokenizer 'word': choose one of"):
        make_tokenizer("word", length=8)
    with pytest.raises(UserError, match="'shapes_words' reads no file"):
        make_tokenizer("shapes_words", length=8, path="x")


@pytest.fixture(scope="module")
def clip_json(tmp_path_factory):
    """A tiny CLIP-like tokenizer.json: letters and word-final letters, a few merges, the start
    and end tokens last (as CLIP's 49406 and 49407)."""
    tokenizers = pytest.importorskip("tokenizers")
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = {c: i for i, c in enumerate(letters)}
    vocab |= {c + "</w>": 26 + i for i, c in enumerate(letters)}
    merges = [("s", "t"), ("st", "a"), ("sta", "r</w>"), ("r", "e"), ("re", "d</w>")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    vocab["<|startoftext|>"], vocab["<|endoftext|>"] = len(vocab), len(vocab) + 1
    tok = tokenizers.Tokenizer(tokenizers.models.BPE(vocab, merges, end_of_word_suffix="</w>"))
    tok.normalizer = tokenizers.normalizers.Lowercase()
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.decoder = tokenizers.decoders.BPEDecoder(suffix="</w>")
    tok.add_special_tokens(["<|startoftext|>", "<|endoftext|>"])
    path = tmp_path_factory.mktemp("clip") / "tokenizer.json"
    tok.save(str(path))
    return path


def test_clip_bpe_layout(clip_json):
    tokenizer = make_tokenizer("clip_bpe", length=8, path=str(clip_json))
    assert (tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id) == (57, 58, 0)
    assert tokenizer.vocab_size == 59
    assert tokenizer.encode("A  red\nSTAR") == [26, 56, 54]  # lower case, merged words
    ids = tokenizer("A red STAR")
    assert ids.tolist() == [57, 26, 56, 54, 58, 0, 0, 0]
    assert int(np.argmax(ids)) == 4 and tokenizer.decode(ids) == "a red star"
    assert tokenizer("red star " * 4).tolist() == [57, 56, 54, 56, 54, 56, 54, 58]
    copy = pickle.loads(pickle.dumps(tokenizer))
    assert copy("a red star").tolist() == ids.tolist()
    assert make_tokenizer("clip_bpe", length=77, path=str(clip_json))("x").shape == (77,)


def test_clip_bpe_errors(clip_json, tmp_path):
    pytest.importorskip("tokenizers")
    with pytest.raises(UserError, match=r"CLIP tokenizer file .*missing.json not found"):
        make_tokenizer("clip_bpe", length=8, path=str(tmp_path / "missing.json"))
    with pytest.raises(
        UserError, match="this tokenizer needs its CLIP tokenizer file: give its path"
    ):
        make_tokenizer("clip_bpe", length=8)
    bad = tmp_path / "bad.json"
    bad.write_text('{"not": "a tokenizer"}')
    with pytest.raises(UserError, match=r"cannot read .*bad.json as a CLIP tokenizer \("):
        make_tokenizer("clip_bpe", length=8, path=str(bad))
    plain = tmp_path / "plain.json"
    plain.write_text(clip_json.read_text().replace("<|startoftext|>", "<|start|>"))
    with pytest.raises(UserError, match=r"has no <\|startoftext\|> / <\|endoftext\|> tokens"):
        make_tokenizer("clip_bpe", length=8, path=str(plain))


def test_clip_bpe_from_merges_matches_openai_tokenizer():
    """CLIP's tokenizer built from (the first 8,000 merges of) its merges file gives the ids of
    openai's own tokenizer (fixtures/make_clip_tokens.py) for 200 texts."""
    pytest.importorskip("tokenizers")
    fixtures = pathlib.Path(__file__).parent / "fixtures"
    reference = json.loads((fixtures / "clip_tokens.json").read_text())
    tokenizer = make_tokenizer("clip_bpe", length=77, path=str(fixtures / reference["merges"]))
    assert (tokenizer.vocab_size, tokenizer.bos_id, tokenizer.eos_id) == (8514, 8512, 8513)
    rows = tokenizer(reference["texts"])
    for text, ids, row in zip(reference["texts"], reference["ids"], rows, strict=True):
        assert tokenizer.encode(text) == ids, text
        framed = [8512, *ids[:75], 8513]
        assert row.tolist() == framed + [0] * (77 - len(framed)), text
    assert tokenizer.decode(rows[1]) == "a small red star left of a blue circle ."
    assert sum(len(ids) > 75 for ids in reference["ids"]) >= 1  # a text long enough to be cut


@pytest.fixture(scope="module")
def spm_model(tmp_path_factory):
    """A tiny SentencePiece model with T5's special ids (pad 0, EOS 1, UNK 2, no BOS), as
    SigLIP's c4_en model has."""
    sentencepiece = pytest.importorskip("sentencepiece")
    texts = ["a red star left of a blue circle", "a small green square", "a large cross"] * 20
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_writer=model,
        vocab_size=40,
        hard_vocab_limit=False,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        minloglevel=2,
    )
    path = tmp_path_factory.mktemp("spm") / "tiny.model"
    path.write_bytes(model.getvalue())
    return path


def test_siglip_spm_layout(spm_model):
    tokenizer = make_tokenizer("siglip_spm", length=12, path=str(spm_model))
    assert (tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id) == (None, 1, 1)
    pieces = tokenizer.encode("a red star")
    assert pieces and 1 not in pieces and 0 not in pieces
    ids = tokenizer("a red star")
    # No start token; the text, EOS, then padding with the EOS id (big_vision's pad_value=1).
    assert ids.tolist() == pieces + [1] * (12 - len(pieces))
    assert tokenizer.decode(ids) == "a red star"
    padded_zero = make_tokenizer("siglip_spm", length=12, path=str(spm_model), pad_id=0)
    assert padded_zero("a red star").tolist() == pieces + [1] + [0] * (11 - len(pieces))
    long = tokenizer("a small green square left of a large blue circle " * 3)
    assert long.shape == (12,) and long[-1] == 1 and (long[:-1] != 1).all()  # sticky EOS
    # A-Z lower-cased first, as big_vision's tokenize op does by default.
    assert tokenizer.encode("A Red STAR") == pieces
    cased = make_tokenizer("siglip_spm", length=12, path=str(spm_model), lower=False)
    assert cased.encode("a red star") == pieces and cased.encode("A Red STAR") != pieces
    copy = pickle.loads(pickle.dumps(padded_zero))
    assert copy("a red star").tolist() == padded_zero("a red star").tolist()


def test_siglip_spm_errors(spm_model, tmp_path):
    pytest.importorskip("sentencepiece")
    garbage = tmp_path / "garbage.model"
    garbage.write_bytes(b"not a model")
    with pytest.raises(UserError, match=r"cannot read .*garbage.model as a SentencePiece model"):
        make_tokenizer("siglip_spm", length=8, path=str(garbage))
    with pytest.raises(UserError, match=r"pad_id 99 is not an id of .*tiny.model \(0\.\.\d+\)"):
        make_tokenizer("siglip_spm", length=8, path=str(spm_model), pad_id=99)


@pytest.mark.parametrize(
    "name, package", [("clip_bpe", "tokenizers"), ("siglip_spm", "sentencepiece")]
)
def test_missing_package_names_the_extra(name, package, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, package, None)  # as if not installed
    path = tmp_path / "vocab"
    path.write_text("x")
    with pytest.raises(UserError) as error:
        make_tokenizer(name, length=8, path=str(path))
    assert str(error.value) == (
        f"tokenizer {name!r} needs the {package} package: pip install -e '.[text]' "
        f"(or pip install {package})"
    )

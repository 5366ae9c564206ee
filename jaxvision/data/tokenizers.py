"""Text to token ids, for the text tower of an image–text model: tokenizers found by name.

    tokenizer = make_tokenizer("shapes_words", length=16)
    tokenizer(["a red star", "a small blue circle left of a green cross"])  # int32 [2, 16]

Names (`TOKENIZERS`, a registry: a new one is a registration, not an edit of a switch):
- "words": `WordTokenizer`, one id per word, from a vocabulary file (`path`: one word a line).
- "shapes_words": the word tokenizer of the captioned shapes' vocabulary
  (`jaxvision.data.shapes_captions.VOCABULARY`); needs no file.
- "clip_bpe": CLIP's byte-level BPE through the `tokenizers` package, from a Hugging Face
  `tokenizer.json` (`path`; e.g. the one in openai/clip-vit-base-patch32 or an open_clip hub
  repository) or from CLIP's merges file `bpe_simple_vocab_16e6.txt.gz` (open_clip ships it).
- "siglip_spm": SigLIP's SentencePiece model through the `sentencepiece` package (`path`: a
  `.model` file, e.g. big_vision's c4_en `cc_en.32000/sentencepiece.model`).
The vocabulary and model files are the user's: nothing is downloaded. The two library-backed
ones import their package when built; without it they stop with a one-line error naming the
extra to install (`pip install -e '.[text]'`).

Every tokenizer turns a text into exactly `length` int32 ids, in one of two layouts:
- CLIP's ("words", "shapes_words", "clip_bpe"): `[SOT, t1 ... tn, EOT, 0, 0, ...]`. EOT has the
  largest id of the vocabulary, so `argmax(tokens)` finds it (CLIP's text pooling); padding is
  0; a text too long is cut to `length - 1` ids and still ends with EOT (open_clip's rule).
- SigLIP's ("siglip_spm"): `[t1 ... tn, EOS, pad, pad, ...]` with no start token; pad is the EOS
  id unless `pad_id` says otherwise (big_vision's SigLIP configs tokenize with
  `eos="sticky", pad_value=1`, and 1 is EOS in the c4_en model); a text too long is cut to
  `length - 1` ids and still ends with EOS ("sticky"). Like big_vision's op, it lower-cases A-Z
  first (`lower=False` keeps the case).
"""

from __future__ import annotations

import gzip
import html
import os
import re
import string
from collections.abc import Iterable, Sequence

import numpy as np

from jaxvision.errors import UserError
from jaxvision.registry import Registry

# name -> factory(length=..., path=..., **options) -> Tokenizer.
TOKENIZERS = Registry("tokenizer")
TOKENIZERS.declare("words", "jaxvision.data.tokenizers:word_tokenizer")
TOKENIZERS.declare("shapes_words", "jaxvision.data.shapes_captions:word_tokenizer")
TOKENIZERS.declare("clip_bpe", "jaxvision.data.tokenizers:ClipTokenizer")
TOKENIZERS.declare("siglip_spm", "jaxvision.data.tokenizers:SentencePieceTokenizer")

EXTRA = "pip install -e '.[text]'"  # what installs the library-backed tokenizers' packages


def make_tokenizer(name: str, *, length: int, path: str | None = None, **options) -> Tokenizer:
    """The tokenizer `name` (see the module docstring) cutting and padding to `length` ids.

    Args:
        name: a `TOKENIZERS` name.
        length: ids per text, at least 2 (room for the end token).
        path: the vocabulary or model file, for the names that read one.
        options: the tokenizer's own settings (`pad_id`, `lower` for "siglip_spm").

    Raises:
        UserError: unknown name, missing or unreadable file, missing package.
    """
    return TOKENIZERS[name](length=length, path=path, **options)


class Tokenizer:
    """Text -> `length` ids. Subclasses set `vocab_size`, `pad_id`, `eos_id`, `bos_id` (None for
    none) and define `encode` / `decode` of the ids between the special tokens."""

    length: int
    vocab_size: int
    pad_id: int
    eos_id: int
    bos_id: int | None = None

    def encode(self, text: str) -> list[int]:
        """The ids of `text` without the start, end and padding tokens."""
        raise NotImplementedError

    def decode(self, ids: Iterable[int]) -> str:
        """The text of `ids`; start, end and padding tokens are left out."""
        raise NotImplementedError

    def frame(self, ids: Sequence[int]) -> list[int]:
        """`ids` with the start and end tokens, cut and padded to `length` (the module's
        layouts)."""
        body = ([self.bos_id] if self.bos_id is not None else []) + list(ids)
        body = body[: self.length - 1] + [self.eos_id]
        return body + [self.pad_id] * (self.length - len(body))

    def __call__(self, texts: str | Sequence[str]) -> np.ndarray:
        """int32 [length] for one text, int32 [B, length] for a sequence of B."""
        if isinstance(texts, str):
            return np.asarray(self.frame(self.encode(texts)), np.int32)
        rows = [self.frame(self.encode(text)) for text in texts]
        return np.asarray(rows, np.int32).reshape(len(rows), self.length)

    def strip(self, ids: Iterable[int]) -> list[int]:
        """The text's ids in `ids`: those before the first end token, without the start token."""
        ids = [int(i) for i in ids]
        if self.eos_id in ids:
            ids = ids[: ids.index(self.eos_id)]
        return ids[1:] if ids[:1] == [self.bos_id] else ids


def _check_length(length: int) -> int:
    if int(length) < 2:
        raise UserError(f"text length must be at least 2 (a token and the end), got {length}")
    return int(length)


_WORD = re.compile(r"[\w']+")


def split_words(text: str) -> list[str]:
    """The words of `text` as the word tokenizer sees them: lower case, runs of letters, digits,
    underscores and apostrophes; everything else separates words ("A red-star." -> ["a", "red",
    "star"], "Café's" -> ["café's"])."""
    return _WORD.findall(text.lower())


class WordTokenizer(Tokenizer):
    """One id per word of a fixed vocabulary, in CLIP's layout.

    Ids: 0 padding, 1 unknown word (UNK), 2 .. V+1 the vocabulary's words in its order, V+2 the
    start token (SOT), V+3 the end token (EOT, the largest). Texts are split by `split_words`.
    """

    PAD, UNK = 0, 1

    def __init__(self, vocabulary: Sequence[str], length: int = 16):
        words = [str(w) for w in vocabulary]
        bad = [w for w in words if split_words(w) != [w]]
        if bad:
            raise UserError(
                f"vocabulary word(s) {', '.join(map(repr, bad[:5]))} are not single lower-case "
                "words: give one word a line, of letters, digits, underscores or apostrophes"
            )
        if len(set(words)) != len(words):
            twice = sorted({w for w in words if words.count(w) > 1})
            raise UserError(
                f"vocabulary words listed twice: {', '.join(twice[:5])}; list each once"
            )
        self.words = tuple(words)
        self.length = _check_length(length)
        self._ids = {w: i + 2 for i, w in enumerate(words)}
        self.pad_id, self.bos_id = self.PAD, len(words) + 2
        self.eos_id = len(words) + 3
        self.vocab_size = len(words) + 4

    @classmethod
    def from_texts(cls, texts: Iterable[str], length: int = 16) -> WordTokenizer:
        """The vocabulary of every word in `texts`, sorted: the same texts give the same ids."""
        return cls(sorted({w for text in texts for w in split_words(text)}), length)

    def encode(self, text: str) -> list[int]:
        return [self._ids.get(w, self.UNK) for w in split_words(text)]

    def decode(self, ids: Iterable[int]) -> str:
        names = {i: w for w, i in self._ids.items()} | {self.UNK: "<unk>"}
        return " ".join(names.get(i, "<unk>") for i in self.strip(ids) if i != self.PAD)


def word_tokenizer(length: int = 16, path: str | None = None) -> WordTokenizer:
    """The "words" tokenizer: its vocabulary from `path`, a text file with one word a line
    (blank lines ignored), ids in the file's order."""
    if path is None:
        raise UserError(
            "tokenizer 'words' needs a vocabulary file (one word a line) as its path; for the "
            "captioned shapes use 'shapes_words'"
        )
    text = _read_text(path, "vocabulary")
    return WordTokenizer([line.strip() for line in text.splitlines() if line.strip()], length)


def _read_text(path: str, what: str) -> str:
    _check_file(path, what)
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read {what} file {path} ({e}): check the file") from None


def _check_file(path: str | None, what: str) -> str:
    if path is None:
        raise UserError(f"this tokenizer needs its {what} file: give its path")
    path = os.path.expanduser(str(path))
    if not os.path.isfile(path):
        raise UserError(f"{what} file {path} not found: check the path (nothing is downloaded)")
    return path


def _import(module: str, package: str, name: str):
    try:
        return __import__(module)
    except ImportError:
        raise UserError(
            f"tokenizer {name!r} needs the {package} package: {EXTRA} (or pip install {package})"
        ) from None


class ClipTokenizer(Tokenizer):
    """CLIP's byte-level BPE (49,408 ids: SOT 49406, EOT 49407) with the `tokenizers` package;
    CLIP's layout. `path`: a Hugging Face `tokenizer.json` of a CLIP model, or CLIP's merges file
    `bpe_simple_vocab_16e6.txt.gz` (shipped with openai's clip and open_clip packages), from
    which the tokenizer is built as CLIP builds it. Text is cleaned as CLIP cleans it (HTML
    entities unescaped, whitespace runs collapsed, lower case) except for ftfy's repairs of
    broken Unicode (ligatures such as "ﬁ" stay as they are).
    """

    SOT, EOT = "<|startoftext|>", "<|endoftext|>"

    def __init__(self, length: int = 77, path: str | None = None):
        self.length = _check_length(length)
        self.path = _check_file(path, "CLIP tokenizer")
        self._load()

    def _load(self) -> None:
        tokenizers = _import("tokenizers", "tokenizers", "clip_bpe")
        try:
            if self.path.endswith(".json"):
                self._tokenizer = tokenizers.Tokenizer.from_file(self.path)
            else:
                self._tokenizer = _clip_from_merges(tokenizers, self.path)
        except Exception as e:  # the library raises a bare Exception for a malformed file
            raise UserError(
                f"cannot read {self.path} as a CLIP tokenizer ({str(e).splitlines()[0]}): give "
                "a CLIP model's tokenizer.json or CLIP's bpe_simple_vocab_16e6.txt.gz"
            ) from None
        # A tokenizer.json may carry its own padding and truncation: the layout is ours.
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()
        ids = [self._tokenizer.token_to_id(t) for t in (self.SOT, self.EOT)]
        if None in ids:
            raise UserError(
                f"{self.path} has no {self.SOT} / {self.EOT} tokens: give a CLIP tokenizer.json"
            )
        self.bos_id, self.eos_id = ids
        self.pad_id = 0
        self.vocab_size = self._tokenizer.get_vocab_size()

    def __getstate__(self) -> dict:
        return {"length": self.length, "path": self.path}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._load()

    def encode(self, text: str) -> list[int]:
        text = " ".join(html.unescape(html.unescape(text)).split())  # CLIP's basic_clean
        return list(self._tokenizer.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: Iterable[int]) -> str:
        text = self._tokenizer.decode(self.strip(ids), skip_special_tokens=True)
        return " ".join(text.replace("</w>", " ").split())


# CLIP's pre-tokenization: contractions, runs of letters, single digits, runs of other symbols.
_CLIP_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
_CLIP_MERGES = 49152 - 256 - 2  # the merges CLIP uses of its file (after the header line)


def _byte_symbols() -> list[str]:
    """The 256 printable characters byte-level BPE writes the bytes 0..255 as (GPT-2's table,
    in CLIP's vocabulary order: the printable bytes first, then the others from U+0100)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    others = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(0x100 + k) for k in range(len(others))]


def _clip_from_merges(tokenizers, path: str):
    """CLIP's tokenizer from its merges file: ids are the 256 byte symbols, the same with the
    end-of-word mark "</w>", one per merge in rank order, then SOT and EOT (49,408 in all)."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")[1 : _CLIP_MERGES + 1]
    merges = [tuple(line.split()) for line in lines]
    if not merges or any(len(m) != 2 for m in merges):
        raise ValueError("its lines are not pairs of symbols")
    symbols = _byte_symbols()
    vocabulary = [*symbols, *(s + "</w>" for s in symbols), *("".join(m) for m in merges)]
    vocabulary += [ClipTokenizer.SOT, ClipTokenizer.EOT]
    model = tokenizers.models.BPE(
        {token: i for i, token in enumerate(vocabulary)},
        merges,
        continuing_subword_prefix="",
        end_of_word_suffix="</w>",
    )
    tokenizer = tokenizers.Tokenizer(model)
    normalizers, pre = tokenizers.normalizers, tokenizers.pre_tokenizers
    tokenizer.normalizer = normalizers.Sequence(
        [
            normalizers.NFC(),
            normalizers.Replace(tokenizers.Regex(r"\s+"), " "),
            normalizers.Lowercase(),
        ]
    )
    tokenizer.pre_tokenizer = pre.Sequence(
        [
            pre.Split(tokenizers.Regex(_CLIP_PATTERN), behavior="removed", invert=True),
            pre.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = tokenizers.decoders.ByteLevel()
    tokenizer.add_special_tokens([ClipTokenizer.SOT, ClipTokenizer.EOT])
    return tokenizer


_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


class SentencePieceTokenizer(Tokenizer):
    """SigLIP's SentencePiece model (`.model` file) with the `sentencepiece` package; SigLIP's
    layout, as big_vision's `tokenize` op makes it. `pad_id`: the padding id (default: the
    model's EOS id, as big_vision's SigLIP configs pad). `lower`: lower-case A-Z first (the
    op's default, `tf.strings.lower`, which leaves other letters alone)."""

    def __init__(
        self,
        length: int = 64,
        path: str | None = None,
        pad_id: int | None = None,
        lower: bool = True,
    ):
        self.length = _check_length(length)
        self.path = _check_file(path, "SentencePiece model")
        self._pad, self.lower = pad_id, bool(lower)
        self._load()

    def _load(self) -> None:
        sentencepiece = _import("sentencepiece", "sentencepiece", "siglip_spm")
        try:
            self._model = sentencepiece.SentencePieceProcessor(model_file=self.path)
        except (OSError, RuntimeError) as e:
            raise UserError(
                f"cannot read {self.path} as a SentencePiece model ({str(e).splitlines()[0]}): "
                "give a SigLIP .model file"
            ) from None
        self.vocab_size = int(self._model.get_piece_size())
        self.eos_id = int(self._model.eos_id())
        if self.eos_id < 0:
            raise UserError(f"{self.path} has no end-of-sentence piece: give a SigLIP .model file")
        self.pad_id = self.eos_id if self._pad is None else int(self._pad)
        if not 0 <= self.pad_id < self.vocab_size:
            raise UserError(
                f"pad_id {self.pad_id} is not an id of {self.path} (0..{self.vocab_size - 1})"
            )

    def __getstate__(self) -> dict:
        return {"length": self.length, "path": self.path, "_pad": self._pad, "lower": self.lower}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._load()

    def encode(self, text: str) -> list[int]:
        text = text.translate(_ASCII_LOWER) if self.lower else text
        return list(self._model.encode(text, out_type=int))

    def decode(self, ids: Iterable[int]) -> str:
        return self._model.decode(self.strip(ids))

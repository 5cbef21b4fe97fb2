"""Text normalisation and the SentencePiece tokenizer.

``normalize_text`` is the one normalisation used everywhere: tokenizer training, training
targets, validation references and WER scoring. SentencePiece piece ``i`` is model token
``i + 1`` because the model reserves index ``BLANK_ID = 0`` for blank.
"""

from __future__ import annotations

import io
import os
import re
import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path

import sentencepiece as spm

from rnnt.constants import (
    BLANK_ID,
    BLANK_PIECE,
    TOKENIZER_CHARACTER_COVERAGE,
    TOKENIZER_TYPE,
    VOCAB_SIZE,
)
from rnnt.data.manifest import read_manifest

TOKENIZER_TYPES = ("unigram", "bpe")

# Typographic apostrophes people type instead of "'" (right quote, modifier letter, prime).
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "\u2032": "'"})
_WHITESPACE = re.compile(r"\s+")
# The same rules for ASCII text, as two regular expressions (about 8x faster: a lazily read
# corpus normalises every transcript as the sampler reads it). Lookarounds see the original
# text, as the character loop of _normalize_any does.
_ASCII_NOT_WORD = re.compile(r"[^a-z0-9'\s]+")
_ASCII_LONE_APOSTROPHE = re.compile(r"(?<![a-z0-9])'|'(?![a-z0-9])")


def _is_word_char(char: str) -> bool:
    # Marks (M*) belong to words: many scripts (Devanagari, Thai, ...) write vowels as marks.
    return unicodedata.category(char)[0] in "LMN"


def normalize_text(text: str) -> str:
    """Normalise a transcript the way training and evaluation both see it.

    Steps: Unicode NFKC (so full-width letters, ligatures and superscript digits become
    plain ones), lower-case, keep letters of any script, combining marks and digits, keep an
    apostrophe only between two word characters ("don't", not "'quoted'"), turn every other
    character (punctuation, symbols) into a space, collapse runs of whitespace and strip.

    >>> normalize_text("  Hello, WORLD!  It's 'quoted' — café ２ ")
    "hello world it's quoted café 2"
    """
    if text.isascii():
        text = _ASCII_LONE_APOSTROPHE.sub(" ", _ASCII_NOT_WORD.sub(" ", text.lower()))
        return _WHITESPACE.sub(" ", text).strip()
    return _normalize_any(text)


def _normalize_any(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).translate(_APOSTROPHES).lower()
    chars = []
    last = len(text) - 1
    for index, char in enumerate(text):
        if _is_word_char(char) or (
            char == "'"
            and 0 < index < last
            and _is_word_char(text[index - 1])
            and _is_word_char(text[index + 1])
        ):
            chars.append(char)
        else:
            chars.append(" ")
    return _WHITESPACE.sub(" ", "".join(chars)).strip()


class Tokenizer:
    """A SentencePiece model seen through the transducer's ids.

    Model ids are SentencePiece ids + 1; id ``BLANK_ID = 0`` is blank. ``vocab_size`` counts
    pieces (blank not included), ``num_classes = vocab_size + 1`` is the joiner's output size V.
    Picklable: it travels to data-loader workers and into checkpoints as the model's bytes.
    """

    def __init__(self, model_bytes: bytes) -> None:
        self._model_bytes = bytes(model_bytes)
        self._processor = spm.SentencePieceProcessor()
        self._processor.LoadFromSerializedProto(self._model_bytes)
        self._known_characters: frozenset[str] | None = None

    @classmethod
    def load(cls, path: str | os.PathLike) -> Tokenizer:
        """Load a ``tokenizer.model`` file written by ``train_tokenizer``."""
        model_path = Path(path)
        if model_path.is_dir():
            raise IsADirectoryError(
                f"{model_path} is a folder, not a tokenizer model; give its tokenizer.model file "
                "(e.g. --data.tokenizer_path)"
            )
        if not model_path.is_file():
            raise FileNotFoundError(
                f"tokenizer model not found: {model_path}; train one with `rnnt tokenizer` "
                "(rnnt.data.tokenizer.train_tokenizer) or fix the path (e.g. --data.tokenizer_path)"
            )
        try:
            return cls(model_path.read_bytes())
        except RuntimeError as error:
            raise ValueError(
                f"{model_path}: not a SentencePiece model ({error}); retrain it with `rnnt tokenizer`"
            ) from None

    @classmethod
    def from_bytes(cls, data: bytes) -> Tokenizer:
        """Rebuild a tokenizer from ``model_bytes`` (e.g. as stored in a checkpoint)."""
        return cls(data)

    @property
    def model_bytes(self) -> bytes:
        """The serialised SentencePiece model."""
        return self._model_bytes

    @property
    def vocab_size(self) -> int:
        """Number of SentencePiece pieces (blank not counted)."""
        return self._processor.GetPieceSize()

    @property
    def num_classes(self) -> int:
        """Output classes of the model, V = vocab_size + 1 (blank included)."""
        return self.vocab_size + 1

    @property
    def pieces(self) -> list[str]:
        """Piece of every model id, length V; index ``BLANK_ID`` is ``BLANK_PIECE``."""
        return [self.id_to_piece(index) for index in range(self.num_classes)]

    @property
    def known_characters(self) -> frozenset[str]:
        """Characters some piece contains; any other character encodes to the unknown piece."""
        if self._known_characters is None:
            processor = self._processor
            self._known_characters = frozenset(
                char
                for piece_id in range(processor.GetPieceSize())
                if not (processor.IsUnknown(piece_id) or processor.IsControl(piece_id))
                for char in processor.IdToPiece(piece_id).replace("\u2581", " ")
            ) | {" "}
        return self._known_characters

    def id_to_piece(self, index: int) -> str:
        """The piece of model id ``index`` (``BLANK_PIECE`` for blank)."""
        if index == BLANK_ID:
            return BLANK_PIECE
        if not 0 < index < self.num_classes:
            raise IndexError(f"model id {index} out of range [0, {self.num_classes})")
        return self._processor.IdToPiece(index - 1)

    def encode(self, text: str) -> list[int]:
        """Normalise ``text`` and return its model ids (U,), each >= 1.

        Characters never seen in training become the unknown piece (model id 1); every id is
        in ``[1, num_classes)`` whatever the text.
        """
        return self.encode_normalized(normalize_text(text))

    def encode_normalized(self, text: str) -> list[int]:
        """:meth:`encode` of text that ``normalize_text`` has already made (not done again)."""
        return [piece_id + 1 for piece_id in self._processor.EncodeAsIds(text)]

    def decode(self, ids: Iterable[int]) -> str:
        """Text of model ids (U,); blanks are ignored."""
        piece_ids = [int(index) - 1 for index in ids if int(index) != BLANK_ID]
        return self._processor.DecodeIds(piece_ids)

    def __getstate__(self) -> dict:
        return {"model_bytes": self._model_bytes}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["model_bytes"])

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size})"


def train_tokenizer(
    manifests: Sequence[str | os.PathLike],
    output_path: str | os.PathLike,
    vocab_size: int = VOCAB_SIZE,
    model_type: str = TOKENIZER_TYPE,
    *,
    skip_invalid: bool = True,
) -> Path:
    """Train a SentencePiece model on the normalised transcripts of one or more manifests.

    Settings: unknown piece id 0, no BOS/EOS/PAD, ``TOKENIZER_CHARACTER_COVERAGE``, identity
    normalisation (``normalize_text`` already ran, so decode(encode(x)) == normalize_text(x)),
    one thread, every sentence used (deterministic: same manifests, same model).

    Args:
        manifests: JSON-lines manifests; only their ``text`` fields are read.
        output_path: the model file to write (e.g. ``tokenizer.model``); a ``.vocab`` listing
            of the pieces is written beside it.
        vocab_size: number of pieces, blank not counted.
        model_type: ``"unigram"`` or ``"bpe"``.
        skip_invalid: skip bad manifest lines and empty transcripts, counted by reason in one
            warning per manifest (as training does); ``False``: stop at the first with a
            ``ManifestError`` naming file:line. Audio files are not read.

    Returns:
        ``output_path`` as a Path.

    Raises:
        ValueError: unknown model type, no text, or a vocabulary too large for the text.
        ManifestError: a manifest is missing or not JSON lines, or (``skip_invalid=False``)
            a line is bad.
    """
    if model_type not in TOKENIZER_TYPES:
        raise ValueError(f"model_type must be one of {TOKENIZER_TYPES}, got {model_type!r}")
    if not manifests:
        raise ValueError("train_tokenizer needs at least one manifest")
    names = ", ".join(str(manifest) for manifest in manifests)
    sentences = []
    for manifest in manifests:
        for utterance in read_manifest(manifest, check_audio=False, skip_invalid=skip_invalid):
            normalized = normalize_text(utterance.text)
            if normalized:
                sentences.append(normalized)
    if not sentences:
        raise ValueError(f"{names}: no transcript has any letter or digit to train a tokenizer on")

    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences),
            model_writer=model,
            vocab_size=vocab_size,
            model_type=model_type,
            character_coverage=TOKENIZER_CHARACTER_COVERAGE,
            normalization_rule_name="identity",
            unk_id=0,
            bos_id=-1,
            eos_id=-1,
            pad_id=-1,
            input_sentence_size=0,
            shuffle_input_sentence=False,
            num_threads=1,
            minloglevel=2,
        )
    except RuntimeError as error:
        raise ValueError(
            _explain_training_error(str(error), names, vocab_size, model_type)
        ) from None

    output = Path(output_path)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(model.getvalue())
    tokenizer = Tokenizer(model.getvalue())
    vocab_lines = [
        f"{tokenizer._processor.IdToPiece(i)}\t{tokenizer._processor.GetScore(i):g}\n"
        for i in range(tokenizer.vocab_size)
    ]
    output.with_suffix(".vocab").write_text("".join(vocab_lines), encoding="utf-8")
    return output


def _explain_training_error(message: str, names: str, vocab_size: int, model_type: str) -> str:
    # SentencePiece's own messages are C++ check failures; say what to change instead.
    what = f"{names}: cannot train a {model_type} tokenizer of {vocab_size} pieces: "
    too_small = re.search(r"smaller than required_chars\. \d+ vs (\d+)", message)
    if too_small:
        return (
            f"{what}every distinct character of the transcripts (plus <unk>) needs its own "
            f"piece; use a larger --vocab-size (at least {too_small.group(1)}). "
            f"SentencePiece said: {message}"
        )
    too_large = re.search(r"<=\s*(\d+)", message)
    hint = f" (at most {too_large.group(1)} for this text)" if too_large else ""
    return (
        f"{what}the text is too small for that many pieces; use a smaller "
        f"--vocab-size{hint}. SentencePiece said: {message}"
    )

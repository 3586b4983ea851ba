"""Byte-pair encoding (Sennrich et al. 2016) for the released GLIDE models' captions.

BPE starts from single characters and repeatedly joins the adjacent pair that ranks highest in a
learned list of merges, so frequent words become one token and rare words split into pieces. Both
released tokenizers work on the UTF-8 *bytes* of the text, each byte shown as one printable character
(`byte_to_unicode`), so no caption is ever out of vocabulary.

- `GlideBPE`: GPT-2's byte-level BPE (Radford et al. 2019), as the released base and upsampler read
  captions: `encoder.json` (token -> id) and `vocab.bpe` (the ranked merges). Captions are lower-cased
  and padded at the end to 128 tokens with the end-of-text token; the mask is True on real tokens.
- `CLIPBPE`: CLIP's BPE (Radford et al. 2021), read by the released noised CLIP's text encoder: one
  merges file (`bpe_simple_vocab_16e6.txt.gz`); a word's last symbol carries "</w>"; a caption is
  [start, tokens, end] padded with 0 to 77, and the mask is True from the start to the end token.

The vocabulary files come with the released code and checkpoints (glide_text2im/tokenizer/ holds
encoder.json.gz, vocab.bpe.gz and bpe_simple_vocab_16e6.txt.gz; gzipped files work as they are) and
are never downloaded: put them in `data/vocab/` (or point $GLIDE_MINIMAL_VOCAB at their folder); a
missing file is an error naming the path.
"""
from __future__ import annotations

import functools
import gzip
import html
import json
import os
import re
import unicodedata
import warnings
from pathlib import Path
from typing import Sequence

import torch

# Rows of the token embedding each released tokenizer needs; known without the vocabulary files, so a
# model can be built (and its parameters counted) before anyone has the files.
VOCAB_SIZES = {"glide-bpe": 50257, "clip-bpe": 49408}
# The file names each tokenizer reads from its folder (a .gz next to the plain name also works).
VOCAB_FILES = {"glide-bpe": ("encoder.json", "vocab.bpe"), "clip-bpe": ("bpe_simple_vocab_16e6.txt",)}


def vocab_dir() -> Path:
    """Where vocabulary files are looked for: $GLIDE_MINIMAL_VOCAB, else data/vocab of this checkout."""
    env = os.environ.get("GLIDE_MINIMAL_VOCAB")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "data" / "vocab"


def find_vocab_file(folder: str | Path, name: str, tokenizer: str) -> Path:
    """`folder/name` or `folder/name.gz`; a clear error naming both when neither exists."""
    plain = Path(folder) / name
    for path in (plain, plain.with_name(name + ".gz")):
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"the {tokenizer} tokenizer needs {name} but neither {plain} nor {plain}.gz exists; copy the vocabulary "
        f"files that come with the released checkpoints ({', '.join(VOCAB_FILES[tokenizer])}) into {Path(folder)} "
        "or set GLIDE_MINIMAL_VOCAB to their folder")


def read_text(path: str | Path) -> str:
    """A UTF-8 text file, gunzipped when its name ends in .gz."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"vocabulary file {path} does not exist")
    data = path.read_bytes()
    return (gzip.decompress(data) if path.suffix == ".gz" else data).decode("utf-8")


@functools.lru_cache(maxsize=None)
def byte_to_unicode() -> dict[int, str]:
    """Every byte 0..255 -> one printable character (GPT-2's table).

    Bytes that already print (! to ~, and the Latin-1 letters and signs) stand for themselves; the
    others (controls, space, ...) are moved to 256 and up, in byte order. So a token is a readable
    string and "Ġ" (256 + 32) is the space that starts a word.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    moved = [b for b in range(256) if b not in table]
    table.update({b: chr(256 + i) for i, b in enumerate(moved)})
    return table


@functools.lru_cache(maxsize=None)
def _unicode_class(prefix: str) -> str:
    """The characters whose Unicode category starts with `prefix` ("L" letters, "N" numbers) as the inside
    of a regex character class, so Python's `re` can stand in for the `regex` module's \\p{L} and \\p{N}."""
    ranges, start, prev = [], None, None
    # Letters and numbers live in planes 0-3 only (4-13 are unassigned, 14 holds tags, 15-16 private use).
    for cp in range(0x40000):
        if unicodedata.category(chr(cp)).startswith(prefix):
            if start is None:
                start = cp
            prev = cp
        elif start is not None:
            ranges.append((start, prev))
            start = None
    if start is not None:
        ranges.append((start, prev))
    return "".join(f"\\U{a:08x}" if a == b else f"\\U{a:08x}-\\U{b:08x}" for a, b in ranges)


@functools.lru_cache(maxsize=None)
def gpt2_pattern() -> re.Pattern:
    """GPT-2's pre-tokenizer: contractions, words with their leading space, numbers, punctuation runs, spaces."""
    letters, numbers = _unicode_class("L"), _unicode_class("N")
    return re.compile(rf"'s|'t|'re|'ve|'m|'ll|'d| ?[{letters}]+| ?[{numbers}]+"
                      rf"| ?[^\s{letters}{numbers}]+|\s+(?!\S)|\s+")


@functools.lru_cache(maxsize=None)
def clip_pattern() -> re.Pattern:
    """CLIP's pre-tokenizer: special tokens, contractions, words, single digits, punctuation runs (no spaces)."""
    letters, numbers = _unicode_class("L"), _unicode_class("N")
    return re.compile(rf"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[{letters}]+|[{numbers}]|"
                      rf"[^\s{letters}{numbers}]+", re.IGNORECASE)


class BPE:
    """The merge loop shared by both tokenizers: symbols -> tokens, by ranked merges.

    At each step the adjacent pair with the best (lowest) rank is joined everywhere it occurs, left to
    right, until no adjacent pair is a known merge.
    """

    def __init__(self, merges: Sequence[tuple[str, str]]):
        self.ranks = {pair: rank for rank, pair in enumerate(merges)}
        self._cache: dict[tuple[str, ...], list[str]] = {}

    def __call__(self, symbols: tuple[str, ...]) -> list[str]:
        if symbols in self._cache:
            return self._cache[symbols]
        word = list(symbols)
        while len(word) > 1:
            ranked = [(self.ranks.get(pair, float("inf")), pair) for pair in zip(word, word[1:])]
            rank, (first, second) = min(ranked, key=lambda r: r[0])
            if rank == float("inf"):
                break
            joined, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and word[i] == first and word[i + 1] == second:
                    joined.append(first + second)
                    i += 2
                else:
                    joined.append(word[i])
                    i += 1
            word = joined
        self._cache[symbols] = word
        return word


def _merges_from_lines(lines: list[str]) -> list[tuple[str, str]]:
    merges = []
    for line in lines:
        parts = line.split()
        if len(parts) == 2:
            merges.append((parts[0], parts[1]))
        elif parts:
            raise ValueError(f"a merge line must be two symbols separated by a space, got {line!r}")
    return merges


class _Padding:
    """padded_tokens_and_mask for a list of captions, on top of a tokenizer's `row(text) -> (ids, n_real)`."""

    context_length: int

    def row(self, text: str) -> tuple[list[int], int]:  # pragma: no cover - each tokenizer defines it
        raise NotImplementedError

    def padded_tokens_and_mask(self, texts: str | Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Captions -> (tokens [N, L] long, mask [N, L] bool, True on the positions the model should read)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        tokens = torch.empty(len(texts), self.context_length, dtype=torch.long)
        mask = torch.zeros(len(texts), self.context_length, dtype=torch.bool)
        for i, text in enumerate(texts):
            ids, n_real = self.row(text)
            tokens[i] = torch.tensor(ids, dtype=torch.long)
            mask[i, :n_real] = True
        return tokens, mask


class GlideBPE(_Padding):
    """GPT-2's byte-level BPE as the released GLIDE base and upsampler use it.

    encode("An oil painting") -> ids (lower-cased first); padded_tokens_and_mask(["...", ""]) -> tokens
    [N, 128] with the end-of-text token after the caption, mask [N, 128] True on the caption's tokens.
    A caption longer than the context is cut (with a warning).
    """

    def __init__(self, encoder_path: str | Path, merges_path: str | Path, context_length: int = 128):
        if context_length < 1:
            raise ValueError(f"context_length must be >= 1, got {context_length}")
        self.encoder_path, self.merges_path = Path(encoder_path), Path(merges_path)
        try:
            self.encoder: dict[str, int] = json.loads(read_text(encoder_path))
        except json.JSONDecodeError as e:
            raise ValueError(f"{encoder_path} is not a JSON token -> id table: {e}") from None
        lines = read_text(merges_path).split("\n")
        if lines and lines[0].startswith("#"):  # "#version: 0.2"
            lines = lines[1:]
        self.bpe = BPE(_merges_from_lines(lines))
        self.decoder = {i: t for t, i in self.encoder.items()}
        self.byte_decoder = {c: b for b, c in byte_to_unicode().items()}
        if "<|endoftext|>" not in self.encoder:
            raise ValueError(f"{encoder_path} has no '<|endoftext|>' token, which pads every caption")
        self.end_token = self.pad_id = self.encoder["<|endoftext|>"]
        self.context_length = context_length

    def __len__(self) -> int:
        return max(self.encoder.values()) + 1

    @staticmethod
    def split(text: str) -> list[str]:
        """The pre-tokenized pieces of a caption (words with their leading space, punctuation, spaces)."""
        return gpt2_pattern().findall(text.lower())

    def encode(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"a caption must be a string, got {type(text).__name__}")
        table, ids = byte_to_unicode(), []
        for piece in self.split(text):
            for token in self.bpe(tuple(table[b] for b in piece.encode("utf-8"))):
                if token not in self.encoder:
                    raise ValueError(f"token {token!r} of {text!r} is not in {self.encoder_path}: the vocabulary "
                                     f"does not match the merges in {self.merges_path}")
                ids.append(self.encoder[token])
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        text = "".join(self.decoder[int(i)] for i in ids if int(i) != self.end_token)
        return bytes(self.byte_decoder[c] for c in text).decode("utf-8", errors="replace")

    def row(self, text: str) -> tuple[list[int], int]:
        ids = self.encode(text)
        if len(ids) > self.context_length:
            warnings.warn(f"caption {text!r} has {len(ids)} tokens; cut to the context of {self.context_length}",
                          stacklevel=3)
            ids = ids[:self.context_length]
        return ids + [self.end_token] * (self.context_length - len(ids)), len(ids)


def clean_caption(text: str) -> str:
    """CLIP's clean-up: repair broken Unicode (ftfy, when installed), unescape HTML, collapse whitespace, lower."""
    try:
        import ftfy  # optional: it only changes mojibake, which ordinary captions do not have

        text = ftfy.fix_text(text)
    except ImportError:
        pass
    text = html.unescape(html.unescape(text)).strip()
    return re.sub(r"\s+", " ", text).strip().lower()


class CLIPBPE(_Padding):
    """CLIP's BPE as the released noised CLIP's text encoder uses it.

    The vocabulary is built from the merges file alone, in this order: the 256 byte characters, the same
    with "</w>" (a word's last symbol), one token per merge, then <|startoftext|> and <|endoftext|>:
    49,408 tokens for the released file. padded_tokens_and_mask -> tokens [N, 77] = [start, caption,
    end, 0, ...], mask True from start to end (the encoder reads its output at the end token).
    """

    MAX_MERGES = 49152 - 256 - 2  # the released file has more lines; CLIP uses this many

    def __init__(self, merges_path: str | Path, context_length: int = 77):
        if context_length < 2:
            raise ValueError(f"context_length must be >= 2 (start and end tokens), got {context_length}")
        self.merges_path = Path(merges_path)
        lines = read_text(merges_path).split("\n")[1:]  # the first line is a version header
        merges = _merges_from_lines(lines)[:self.MAX_MERGES]
        self.bpe = BPE(merges)
        chars = list(byte_to_unicode().values())
        vocab = (chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges]
                 + ["<|startoftext|>", "<|endoftext|>"])
        self.encoder = {t: i for i, t in enumerate(vocab)}
        self.decoder = dict(enumerate(vocab))
        self.byte_decoder = {c: b for b, c in byte_to_unicode().items()}
        self.start_token, self.end_token = self.encoder["<|startoftext|>"], self.encoder["<|endoftext|>"]
        self.pad_id = 0
        self.context_length = context_length

    def __len__(self) -> int:
        return len(self.decoder)

    @staticmethod
    def split(text: str) -> list[str]:
        return clip_pattern().findall(clean_caption(text))

    def encode(self, text: str) -> list[int]:
        """Caption -> ids, without the start and end tokens."""
        if not isinstance(text, str):
            raise TypeError(f"a caption must be a string, got {type(text).__name__}")
        table, ids = byte_to_unicode(), []
        for piece in self.split(text):
            symbols = [table[b] for b in piece.encode("utf-8")]
            symbols[-1] += "</w>"
            ids.extend(self.encoder[t] for t in self.bpe(tuple(symbols)))
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        special = {self.start_token, self.end_token}
        text = "".join(self.decoder[int(i)] for i in ids if int(i) not in special)
        text = text.replace("</w>", byte_to_unicode()[ord(" ")])  # a word's end is a space
        return bytes(self.byte_decoder[c] for c in text).decode("utf-8", errors="replace").strip()

    def row(self, text: str) -> tuple[list[int], int]:
        ids = self.encode(text)
        room = self.context_length - 2
        if len(ids) > room:
            warnings.warn(f"caption {text!r} has {len(ids)} tokens; cut to {room} (the context of "
                          f"{self.context_length} less the start and end tokens)", stacklevel=3)
            ids = ids[:room]
        ids = [self.start_token, *ids, self.end_token]
        return ids + [self.pad_id] * (self.context_length - len(ids)), len(ids)


def load_bpe(name: str, context_length: int, folder: str | Path | None = None) -> GlideBPE | CLIPBPE:
    """The released tokenizer `name` ("glide-bpe" or "clip-bpe") from the vocabulary files in `folder`."""
    folder = Path(folder) if folder is not None else vocab_dir()
    if name == "glide-bpe":
        return GlideBPE(find_vocab_file(folder, "encoder.json", name), find_vocab_file(folder, "vocab.bpe", name),
                        context_length)
    if name == "clip-bpe":
        return CLIPBPE(find_vocab_file(folder, "bpe_simple_vocab_16e6.txt", name), context_length)
    raise ValueError(f"unknown BPE tokenizer {name!r}; choose one of: {', '.join(VOCAB_SIZES)}")

"""An open-vocabulary tokenizer learned from your own captions: byte-level BPE (model.tokenizer: bpe).

Real captions use words no fixed word list knows. Byte-level BPE (Sennrich et al. 2016 on UTF-8 bytes, as
GPT-2 does, Radford et al. 2019) never meets an unknown word: any text is a sequence of bytes, and the merges
learned from the training captions make frequent words single tokens. The Hugging Face `tokenizers` library
learns the merges in seconds, so the Trainer learns one from the run's own captions when it starts (vocabulary
size: model.text_vocab_size), writes it beside the run's checkpoint as tokenizer.json, and publishing copies it
beside the weights (NAME.tokenizer.json, its sha256 in the MANIFEST). Loading a model loads its tokenizer.

Captions are NFKC-normalised and lower-cased; id 0 is padding, as for the word-level tokenizer, so the empty
caption "" (all padding) is classifier-free guidance's unconditional input.
"""
from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Iterable, Sequence

import torch

from ..checkpoint import atomic_write_bytes

PAD = "<pad>"


def _library():
    try:
        import tokenizers  # imported when used: only a bpe config needs the library
    except ImportError as e:  # a dependency of the package; only a hand-made environment lacks it
        raise ImportError("model.tokenizer 'bpe' needs the tokenizers package: pip install tokenizers") from e
    return tokenizers


class LearnedBPE:
    """A byte-level BPE with the word-level tokenizer's interface: encode, decode, len and
    padded_tokens_and_mask(texts) -> (tokens [N, L] long, mask [N, L] bool, True on real tokens)."""

    def __init__(self, tokenizer, context_length: int, source: str = "a learned BPE"):
        if context_length < 1:
            raise ValueError(f"context_length must be >= 1, got {context_length}")
        if tokenizer.token_to_id(PAD) != 0:
            raise ValueError(f"{source} is not a glide-minimal BPE: its token 0 must be {PAD!r}")
        self.tokenizer, self.context_length, self.pad_id, self.source = tokenizer, context_length, 0, source

    @classmethod
    def load(cls, path: str | Path, context_length: int) -> LearnedBPE:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"the learned BPE tokenizer {path} does not exist: it is written beside the "
                                    "checkpoint (tokenizer.json in a run folder, NAME.tokenizer.json when published)")
        try:
            tokenizer = _library().Tokenizer.from_file(str(path))
        except Exception as e:  # the library raises its own exception type for a malformed file
            raise ValueError(f"{path} is not a tokenizers JSON file: {e}") from None
        return cls(tokenizer, context_length, str(path))

    def save(self, path: str | Path) -> None:
        atomic_write_bytes(Path(path), self.tokenizer.to_str(pretty=True).encode())

    def __len__(self) -> int:
        return self.tokenizer.get_vocab_size()

    @staticmethod
    def split(text: str) -> list[str]:
        """The caption's words, lower-cased, without punctuation: [] for a caption that has none."""
        return re.findall(r"\w+", text.lower())

    def encode(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"a caption must be a string, got {type(text).__name__}")
        return self.tokenizer.encode(text).ids if text else []

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode([i for i in ids if i != self.pad_id]).strip()

    def padded_tokens_and_mask(self, texts: str | Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids padded at the end to the context: ([N, L] long, [N, L] bool). "" is all padding."""
        return pad_to_context(self, texts)


def pad_to_context(tokenizer, texts: str | Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids of texts padded at the end to tokenizer.context_length with tokenizer.pad_id: ([N, L] long,
    [N, L] bool, True on real tokens); a longer caption is truncated with a warning. Shared by the word-level
    tokenizer and the learned BPE (both: encode, decode, context_length, pad_id)."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    length = tokenizer.context_length
    tokens = torch.full((len(texts), length), tokenizer.pad_id, dtype=torch.long)
    mask = torch.zeros(len(texts), length, dtype=torch.bool)
    for row, text in enumerate(texts):
        ids = tokenizer.encode(text)
        if len(ids) > length:
            warnings.warn(f"caption {text!r} has {len(ids)} tokens; truncated to the context of {length}: "
                          f"{tokenizer.decode(ids[:length])!r}", stacklevel=3)
            ids = ids[:length]
        tokens[row, :len(ids)] = torch.tensor(ids, dtype=torch.long)
        mask[row, :len(ids)] = True
    return tokens, mask


def learn_bpe(captions: Iterable[str], vocab_size: int, context_length: int) -> LearnedBPE:
    """Learn a byte-level BPE of vocab_size tokens (padding and the 256 bytes included) from captions."""
    tk = _library()
    if vocab_size < 258:
        raise ValueError(f"a byte-level BPE needs model.text_vocab_size >= 258 (padding, the 256 bytes and at least "
                         f"one merge), got {vocab_size}")
    tokenizer = tk.Tokenizer(tk.models.BPE())
    tokenizer.normalizer = tk.normalizers.Sequence([tk.normalizers.NFKC(), tk.normalizers.Lowercase()])
    tokenizer.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=True)
    tokenizer.decoder = tk.decoders.ByteLevel()
    trainer = tk.trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD], show_progress=False,
                                     initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet())
    captions = [c for c in captions if c]
    if not captions:
        raise ValueError("no captions to learn a BPE from")
    tokenizer.train_from_iterator(captions, trainer=trainer)
    return LearnedBPE(tokenizer, context_length)

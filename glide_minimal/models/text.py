"""Text: a word-level tokenizer and GLIDE's text transformer.

GLIDE (Nichol et al. 2021, section 3) encodes the caption with a transformer (Vaswani et al. 2017)
and feeds the result to the U-Net twice: the output at the last position, projected, is added to the
timestep embedding; the whole token sequence, projected per attention layer, is placed in front of the
image's keys and values. Captions are padded at the end to a fixed context, and padded positions get
a learned per-position `padding_embedding` instead of a token embedding, so the empty caption (all
padding) is a well-defined input: the unconditional branch of classifier-free guidance.
"""
from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Sequence

import torch
from einops import rearrange
from torch import nn
from torch.nn import functional as F

from ..vocabulary import WORD_VOCABULARIES
from .bpe import VOCAB_SIZES, load_bpe
from .learned_bpe import LearnedBPE, pad_to_context

PAD = "<pad>"


class WordTokenizer:
    """A word-level tokenizer over an explicit vocabulary (id 0 is padding).

    encode("a red circle") -> [ids]; padded_tokens_and_mask(["a red circle", ""]) -> tokens [N, L] long,
    mask [N, L] bool (True on real tokens). Lower-cases and ignores punctuation; an unknown word is an
    error naming it and the nearest known words, and a caption with no words ("!!!") is an error (only ""
    is the empty caption); a caption longer than the context is truncated with a warning.
    """

    def __init__(self, words: Sequence[str], context_length: int):
        if context_length < 1:
            raise ValueError(f"context_length must be >= 1, got {context_length}")
        self.vocab = [PAD] + sorted(set(words))
        self.ids = {w: i for i, w in enumerate(self.vocab)}
        self.context_length = context_length
        self.pad_id = 0

    def __len__(self) -> int:
        return len(self.vocab)

    @staticmethod
    def split(text: str) -> list[str]:
        return re.sub(r"[^\w\s]", " ", text.lower()).split()

    def encode(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"a caption must be a string, got {type(text).__name__}")
        words = self.split(text)
        if text and not words:  # "" is the unconditional caption; "!!!" must not silently become it
            raise ValueError(f"the prompt {text!r} has no words (punctuation is ignored), so the model would see the "
                             "unconditional prompt \"\": write a caption, or pass \"\" for the unconditional model")
        ids = []
        for word in words:
            if word not in self.ids:
                near = difflib.get_close_matches(word, self.vocab[1:], n=3, cutoff=0.5)
                hint = f"; did you mean {' or '.join(repr(w) for w in near)}?" if near else ""
                raise ValueError(f"unknown word {word!r} in {text!r}{hint} Known words: {' '.join(self.vocab[1:])}")
            ids.append(self.ids[word])
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        return " ".join(self.vocab[i] for i in ids if i != self.pad_id)

    def padded_tokens_and_mask(self, texts: str | Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids padded at the end to the context: ([N, L] long, [N, L] bool). "" is all padding."""
        return pad_to_context(self, texts)


# The names a config may give (model.tokenizer, clip.tokenizer): word-level ones, then the released BPEs.
TOKENIZERS = (*WORD_VOCABULARIES, "glide-bpe", "clip-bpe", "bpe")


def get_tokenizer(name: str, context_length: int, vocab_dir: str | Path | None = None, file: str | Path = ""):
    """The tokenizer a config names (model.tokenizer, clip.tokenizer).

    A word-level name is a WordTokenizer over its word list (vocabulary.WORD_VOCABULARIES: data, not
    the renderer that draws the captions); glide-bpe and clip-bpe (the released models' BPEs, see
    bpe.py) read their vocabulary files from vocab_dir (default: $GLIDE_MINIMAL_VOCAB or data/vocab);
    bpe (learned from a run's captions, learned_bpe.py) reads `file`, its tokenizer.json.
    """
    if name in WORD_VOCABULARIES:
        return WordTokenizer(WORD_VOCABULARIES[name], context_length)
    if name in ("glide-bpe", "clip-bpe"):
        return load_bpe(name, context_length, vocab_dir)
    if name == "bpe":
        if not file:
            raise ValueError("tokenizer 'bpe' is learned from the training captions, and this config names no "
                             "tokenizer_file: load the model with gm.load_pipeline / load_model (which find the "
                             "file beside the weights), or set model.tokenizer_file")
        return LearnedBPE.load(file, context_length)
    raise ValueError(f"unknown tokenizer {name!r}; choose one of: {', '.join(TOKENIZERS)}")


def config_tokenizer(section):
    """The tokenizer of a config section that has text (cfg.model or cfg.clip)."""
    return get_tokenizer(section.tokenizer, section.text_ctx, file=section.tokenizer_file)


def tokenizer_vocab_size(name: str, context_length: int = 1) -> int:
    """Token embedding rows for a tokenizer, without its vocabulary files (so any config builds anywhere)."""
    if name in VOCAB_SIZES:
        return VOCAB_SIZES[name]
    return len(get_tokenizer(name, context_length))


class MultiheadSelfAttention(nn.Module):
    """x [N, L, W] -> [N, L, W]. One fused projection, channels grouped per head as [q | k | v]."""

    def __init__(self, width: int, heads: int, causal: bool = False):
        super().__init__()
        if width % heads:
            raise ValueError(f"text width {width} is not divisible by {heads} heads")
        self.heads, self.causal = heads, causal
        self.c_qkv = nn.Linear(width, 3 * width)
        self.c_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = rearrange(self.c_qkv(x), "n l (heads three d) -> three n heads l d", heads=self.heads, three=3)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        return self.c_proj(rearrange(out, "n heads l d -> n l (heads d)"))


class MLP(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.c_fc, self.gelu, self.c_proj = nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.gelu(self.c_fc(x)))


class ResidualAttentionBlock(nn.Module):
    """Pre-LayerNorm transformer block (as GPT-2, Radford et al. 2019): x + attn(ln(x)), then x + mlp(ln(x)).

    attention: the self-attention class (GLIDE's text transformer fuses q, k, v; the noised CLIP does not).
    """

    def __init__(self, width: int, heads: int, causal: bool = False,
                 attention: type[nn.Module] = MultiheadSelfAttention):
        super().__init__()
        self.ln_1, self.attn = nn.LayerNorm(width), attention(width, heads, causal)
        self.ln_2, self.mlp = nn.LayerNorm(width), MLP(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, causal: bool = False):
        super().__init__()
        self.resblocks = nn.Sequential(*[ResidualAttentionBlock(width, heads, causal) for _ in range(layers)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resblocks(x)


class TextTransformer(nn.Module):
    """GLIDE's caption encoder: tokens [N, L] long, mask [N, L] bool -> outputs [N, L, W].

    Bidirectional (every position sees every other), so the last position can summarise the caption:
    GLIDE uses its output as the pooled caption vector. Padded positions (mask False) take the learned
    padding_embedding of their position instead of token + position embeddings.
    """

    def __init__(self, vocab_size: int, context_length: int, width: int, layers: int, heads: int,
                 final_ln: bool = True, padding: bool = True):
        super().__init__()
        self.context_length = context_length
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.randn(context_length, width) * 0.01)
        self.padding_embedding = nn.Parameter(torch.randn(context_length, width) * 0.01) if padding else None
        self.transformer = Transformer(width, layers, heads)
        self.final_ln = nn.LayerNorm(width) if final_ln else None

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if tokens.ndim != 2 or tokens.shape[1] != self.context_length:
            raise ValueError(f"tokens must be [N, {self.context_length}] (the text context), got {tuple(tokens.shape)}")
        x = self.token_embedding(tokens) + self.positional_embedding
        if self.padding_embedding is not None:
            if mask is None:
                raise ValueError("this text transformer replaces padding by a learned embedding: pass mask [N, L] "
                                 "(True on real tokens), e.g. from tokenizer.padded_tokens_and_mask")
            x = torch.where(mask[..., None], x, self.padding_embedding.to(x.dtype))
        x = self.transformer(x)
        return self.final_ln(x) if self.final_ln is not None else x

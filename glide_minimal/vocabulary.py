"""The words of ShapesWorld captions: the attribute words and the grammar words around them.

Data only, no rendering and no torch. The renderer (shapesworld.py) draws scenes from these words, and
the word-level tokenizer a config names (WORD_VOCABULARIES) gets its word list from here, so a model
never imports the renderer. The order of each tuple matters: scenes are drawn by index into them (so
reordering one changes every dataset), and the evaluator's class ids are positions in them.
"""
from __future__ import annotations

SHAPES = ("circle", "square", "triangle", "cross")
COLOR_NAMES = ("red", "green", "blue", "yellow", "magenta", "cyan")
SIZE_NAMES = ("small", "large")
POSITIONS = ("top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right")
# What joins the attributes: "a large red circle in the top left", "a small blue square and a large yellow cross".
GRAMMAR_WORDS = ("a", "and", "in", "on", "the")


def caption_words() -> list[str]:
    """Every word a ShapesWorld caption can use, sorted: the word-level tokenizer's vocabulary."""
    words = {*GRAMMAR_WORDS, *SHAPES, *COLOR_NAMES, *SIZE_NAMES}
    for position in POSITIONS:
        words.update(position.split())  # "top left" is two words
    return sorted(words)


# The word-level tokenizers a config can name (model.tokenizer, clip.tokenizer) -> the words each knows.
# (The released models' BPE tokenizers read vocabulary files instead: models/bpe.py.)
WORD_VOCABULARIES: dict[str, tuple[str, ...]] = {"shapesworld": tuple(caption_words())}

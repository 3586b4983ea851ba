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


# Each attribute value and the words that name it (the first is the canonical caption's word).
ATTRIBUTE_WORDS: dict[str, dict[str, tuple[str, ...]]] = {
    "size": {"small": ("small", "little", "tiny"), "large": ("large", "big")},
    "color": {c: (c,) for c in COLOR_NAMES},
    "shape": {"circle": ("circle", "disk"), "square": ("square", "box"), "triangle": ("triangle",),
              "cross": ("cross", "plus")},
    "position": {"top left": ("top left", "upper left"), "top": ("top",), "top right": ("top right", "upper right"),
                 "left": ("left",), "center": ("center", "middle"), "right": ("right",),
                 "bottom left": ("bottom left", "lower left"), "bottom": ("bottom",),
                 "bottom right": ("bottom right", "lower right")},
}
ANY_SHAPE = ("shape", "object", "thing")  # the noun of an object whose shape the caption leaves open
CORNERS = ("top left", "top right", "bottom left", "bottom right")  # "in the top left corner"
EDGES = ("left", "right", "top", "bottom")  # "on the left" (the canonical caption's preposition for left/right)

_VARIED_GRAMMAR_WORDS = ("a", "an", "and", "there", "is", "that", "something", "in", "at", "on", "the", "corner")


def varied_caption_words() -> list[str]:
    """Every word of captions people write (captions.py), sorted: the "shapesworld-varied" tokenizer's vocabulary."""
    words = {*_VARIED_GRAMMAR_WORDS, *ANY_SHAPE}
    for names in ATTRIBUTE_WORDS.values():
        for phrases in names.values():
            for phrase in phrases:
                words.update(phrase.split())
    return sorted(words)


# The word-level tokenizers a config can name (model.tokenizer, clip.tokenizer) -> the words each knows.
# (The released models' BPE tokenizers read vocabulary files instead: models/bpe.py.)
WORD_VOCABULARIES: dict[str, tuple[str, ...]] = {"shapesworld": tuple(caption_words()),
                                                 "shapesworld-varied": tuple(varied_caption_words())}

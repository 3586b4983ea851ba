"""Captions people write about ShapesWorld scenes (chapter 4): synonyms, word orders, attributes left
out, and two objects, with some phrasings held out of training.

The canonical caption ("a large red circle in the top left") fixes its image exactly, so a model trained
on it alone leaves classifier-free guidance nothing to win. People write "a red circle" (size and place
left open: many images are right), "something blue in the upper left corner", "a circle that is small
and red", "a small red circle and a large blue square" (two objects: each attribute must land on the
right one). This module is that grammar, both ways:

    describe(scene, generator)  -> one random caption of a scene, in the training phrasings
    describe(scene, generator, phrasings="held_out") -> one in a phrasing never used in training
    parse(text)                 -> Caption: the objects it asks for (None where it leaves an attribute open)

Every word of a held-out phrasing also occurs in training; what is new is the word order (the place
first, one adjective before the noun and one after, the color before the size), so a model's score on
them measures whether it learned the attributes or memorised the templates. parse() flags any caption
with such an order, whether describe() wrote it or a person did. Words only, no torch beyond the random generator.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, replace

import torch

from .vocabulary import ANY_SHAPE, ATTRIBUTE_WORDS, CORNERS, EDGES, POSITIONS, SHAPES, SIZE_NAMES
from .vocabulary import varied_caption_words as caption_words

__all__ = ["ATTRIBUTE_WORDS", "Caption", "ObjectSpec", "PHRASINGS", "caption_words", "describe", "evaluation_prompts",
           "parse"]

# One object's clause: {o} is the object phrase, {p} its place ("in the top left"). A clause without a
# place is "{o}" or "there is {o}". Held-out clauses put the place first.
PHRASINGS = {
    "train": {"clauses": ("{o} {p}", "there is {o} {p}", "{o} is {p}"),
              "objects": ("pre", "post")},  # "a small red circle"; "a circle that is small and red"
    "held_out": {"clauses": ("{p} there is {o}", "{p} is {o}"),
                 "objects": ("mixed",)},  # "a red circle that is small": one adjective before, one after
}
_CLAUSE_STARTS = {"a", "an", "there", "something", "in", "at", "on"}  # "and" before one of these joins two objects


@dataclass(frozen=True)
class ObjectSpec:
    """What a caption asks of one object; None where it leaves the attribute open."""

    shape: str | None = None
    color: str | None = None
    size: str | None = None
    position: str | None = None

    def specified(self) -> dict[str, str]:
        return {a: v for a, v in vars(self).items() if v is not None}


@dataclass(frozen=True)
class Caption:
    """A parsed caption: its objects (one or two) and whether it uses a phrasing held out of training."""

    objects: tuple[ObjectSpec, ...]
    held_out: bool


_KNOWN_WORDS = tuple(caption_words())  # sorted; parse() checks every word against it
_WORD_VALUE = {w: (attr, value) for attr in ("size", "color", "shape")
               for value, words in ATTRIBUTE_WORDS[attr].items() for w in words}
_EXAMPLES = ("'a large red circle in the top left'", "'a red circle'", "'something blue on the left'",
             "'a circle that is small and red'", "'in the middle there is a big green box'",
             "'a small red circle and a large blue square'")


# -- writing a caption --------------------------------------------------------------------------------------
def _choice(options, g: torch.Generator):
    return options[torch.randint(len(options), (1,), generator=g).item()]


def _place(position: str, g: torch.Generator) -> str:
    preps = ["in", "at"] + (["on"] if position in EDGES else [])
    words = _choice(ATTRIBUTE_WORDS["position"][position], g)
    corner = " corner" if position in CORNERS and torch.rand(1, generator=g).item() < 0.5 else ""
    return f"{_choice(preps, g)} the {words}{corner}"


def _object(shape, color, size, form: str, g: torch.Generator) -> str:
    """One object's phrase in a form: pre "a small red circle", post "a circle that is small and red",
    mixed "a red circle that is small"; "something small and red" when the shape is left open (pre/post)."""
    size_w = _choice(ATTRIBUTE_WORDS["size"][size], g) if size else None
    adjectives = [w for w in (size_w, color) if w]
    if shape is None and form != "mixed" and adjectives and torch.rand(1, generator=g).item() < 0.5:
        return "something " + " and ".join(adjectives)
    noun = _choice(ATTRIBUTE_WORDS["shape"][shape], g) if shape else _choice(ANY_SHAPE, g)
    if form == "pre" or not adjectives:
        words = [*adjectives, noun]
    elif form == "post":
        words = [noun, "that is", " and ".join(adjectives)]
    else:  # mixed: the color before the noun, the size after
        words = [color, noun, "that is", size_w]
    article = "an" if words[0][0] in "aeiou" else "a"
    return " ".join([article, *words])


def describe(scene, generator: torch.Generator, phrasings: str = "train", p_leave_out: float = 0.25,
             p_place: float | None = None) -> str:
    """A random caption of a scene (a list of ShapeObject, one or two) in the given phrasings.

    Each of shape, color and size is left out with probability p_leave_out (never all three), and the
    place is given with probability p_place (default 0.6 for one object, 0.3 for each of two). A held-out
    caption has every attribute and place (its phrasings need them) and uses only held-out templates.
    """
    if phrasings not in PHRASINGS:
        raise ValueError(f"unknown phrasings {phrasings!r}; choose one of: {', '.join(PHRASINGS)}")
    if not 1 <= len(scene) <= 2:
        raise ValueError(f"a ShapesWorld scene has one or two objects, got {len(scene)}")
    p_place = (0.6 if len(scene) == 1 else 0.3) if p_place is None else p_place
    held = phrasings == "held_out"
    clauses = []
    for obj in scene:
        keep = {"shape": obj.shape, "color": obj.color, "size": obj.size}
        if not held:
            while True:
                left_out = torch.rand(3, generator=generator) < p_leave_out
                if not left_out.all():
                    break
            keep = {a: (None if out else v) for (a, v), out in zip(keep.items(), left_out.tolist())}
        form = _choice(PHRASINGS[phrasings]["objects"], generator)
        o = _object(keep["shape"], keep["color"], keep["size"], form, generator)
        if held or torch.rand(1, generator=generator).item() < p_place:
            template = _choice(PHRASINGS[phrasings]["clauses"], generator)
            clauses.append(template.format(o=o, p=_place(obj.position, generator)))
        else:
            clauses.append(_choice(("{o}", "there is {o}"), generator).format(o=o))
    return " and ".join(clauses)


# -- reading a caption --------------------------------------------------------------------------------------
def _not_in_grammar(text: str, why: str) -> ValueError:
    return ValueError(f"{text!r} is not a ShapesWorld caption ({why}); write e.g. {', '.join(_EXAMPLES)}")


def _read_place(words: list[str], text: str) -> tuple[str, int]:
    """("in", "the", "upper", "left", "corner", ...) -> ("top left", words used)."""
    if len(words) < 3 or words[0] not in ("in", "at", "on") or words[1] != "the":
        raise _not_in_grammar(text, "a place reads 'in the top left', 'at the middle' or 'on the left'")
    for n in (2, 1):  # the longest place first: "top left" before "top"
        if len(words) < 2 + n:
            continue
        phrase = " ".join(words[2:2 + n])
        for position, names in ATTRIBUTE_WORDS["position"].items():
            if phrase in names:
                used = 2 + n
                if position in CORNERS and words[used:used + 1] == ["corner"]:
                    used += 1
                return position, used
    places = ", ".join(ATTRIBUTE_WORDS["position"])
    raise _not_in_grammar(text, f"{' '.join(words[2:4])!r} is not a place; places are {places} "
                          "(or upper/lower for top/bottom, middle for center)")


def _read_adjectives(words: list[str], text: str) -> tuple[dict[str, str], bool]:
    """["small", "and", "red"] -> ({"size": "small", "color": "red"}, joined by "and").

    Training captions name the size before the color; the other order is a held-out phrasing (below).
    """
    found: dict[str, str] = {}
    joined = False
    for i, w in enumerate(words):
        if w == "and" and 0 < i < len(words) - 1:
            joined = True
            continue
        if w not in _WORD_VALUE or _WORD_VALUE[w][0] == "shape":
            raise _not_in_grammar(text, f"{w!r} where a size or color should be")
        attr, value = _WORD_VALUE[w]
        if attr in found:
            raise _not_in_grammar(text, f"two {attr}s for one object")
        found[attr] = value
    return found, joined


def _unseen_order(attrs: dict[str, str], joined: bool, form: str) -> bool:
    """Whether adjectives read in an order training captions never use: color before size, "and" between
    adjectives before a noun ("a small and red circle"), or two after one without it ("something small red")."""
    two = len(attrs) == 2
    return (two and list(attrs) == ["color", "size"]) or (form == "pre" and joined) or (
        form in ("post", "something") and two and not joined)


def _read_object(words: list[str], text: str) -> tuple[dict[str, str], bool]:
    """An object phrase -> ({attribute: value}, whether its form is one training captions never use)."""
    if words[:1] == ["something"]:
        if len(words) < 2:
            raise _not_in_grammar(text, "'something' needs a size or color after it, as in 'something red'")
        attrs, joined = _read_adjectives(words[1:], text)
        return attrs, _unseen_order(attrs, joined, "something")
    if words[:1] not in (["a"], ["an"]):
        raise _not_in_grammar(text, "an object starts with 'a', 'an' or 'something'")
    nouns = [i for i, w in enumerate(words) if w in ANY_SHAPE or _WORD_VALUE.get(w, ("",))[0] == "shape"]
    if len(nouns) != 1:
        raise _not_in_grammar(text, "each object needs one noun: a shape, or 'shape', 'object', 'thing'")
    i = nouns[0]
    attrs, joined = _read_adjectives(words[1:i], text)
    noun = {"shape": _WORD_VALUE[words[i]][1]} if words[i] not in ANY_SHAPE else {}
    rest = words[i + 1:]
    if not rest:
        return {**attrs, **noun}, _unseen_order(attrs, joined, "pre")
    if rest[:2] != ["that", "is"] or len(rest) < 3:
        raise _not_in_grammar(text, "after the noun comes 'that is' and a size or color")
    after, joined_after = _read_adjectives(rest[2:], text)
    if set(after) & set(attrs):
        raise _not_in_grammar(text, "an attribute named twice for one object")
    if attrs:  # mixed: one adjective before the noun, one after (held out)
        return {**attrs, **after, **noun}, True
    return {**after, **noun}, _unseen_order(after, joined_after, "post")


def _read_clause(words: list[str], text: str) -> tuple[ObjectSpec, bool]:
    """One object's clause -> (its spec, whether the phrasing is held out)."""
    if words[:1] in (["in"], ["at"], ["on"]):  # held out: the place first
        position, used = _read_place(words, text)
        rest = words[used:]
        rest = rest[2:] if rest[:2] == ["there", "is"] else rest[1:] if rest[:1] == ["is"] else rest
        attrs, _ = _read_object(rest, text)
        return ObjectSpec(**attrs, position=position), True
    if words[:2] == ["there", "is"]:
        words = words[2:]
    position = None
    starts = [i for i in range(1, len(words) - 2) if words[i] in ("in", "at", "on") and words[i + 1] == "the"]
    if starts:
        position, used = _read_place(words[starts[0]:], text)
        if starts[0] + used != len(words):
            raise _not_in_grammar(text, f"words after the place: {' '.join(words[starts[0] + used:])!r}")
        words = words[:starts[0]]
        if words[-1:] == ["is"] and words[-2:-1] != ["that"]:
            words = words[:-1]
    attrs, unseen = _read_object(words, text)
    return ObjectSpec(**attrs, position=position), unseen


def parse(text: str) -> Caption:
    """The objects a caption asks for. Lower-cases and ignores punctuation. An unknown word is an error that
    names it, suggests the nearest known words and lists them all; known words in an order the grammar
    does not have are an error with examples of captions it does have.

    parse("a red circle") -> Caption((ObjectSpec(shape="circle", color="red"),), held_out=False)
    """
    if not isinstance(text, str):
        raise TypeError(f"a caption must be a string, got {type(text).__name__}")
    words = "".join(ch if ch.isalnum() or ch.isspace() else " " for ch in text.lower()).split()
    if not words:
        raise ValueError(f"{text!r} has no words: a ShapesWorld caption names a shape, color, size or place")
    known = _KNOWN_WORDS
    for w in words:
        if w not in known:
            near = difflib.get_close_matches(w, known, n=3, cutoff=0.5)
            hint = f"; did you mean {' or '.join(repr(n) for n in near)}?" if near else ";"
            raise ValueError(f"unknown word {w!r} in {text!r}{hint} known words: {' '.join(known)}")
    clauses, start = [], 0
    for i, w in enumerate(words):
        if w == "and" and i + 1 < len(words) and words[i + 1] in _CLAUSE_STARTS:
            clauses.append(words[start:i])
            start = i + 1
    clauses.append(words[start:])
    if len(clauses) > 2:
        raise _not_in_grammar(text, f"it names {len(clauses)} objects; a scene has one or two")
    read = [_read_clause(c, text) for c in clauses]
    objects = tuple(spec for spec, _ in read)
    for spec in objects:
        if not spec.specified():
            raise _not_in_grammar(text, "an object with nothing specified")
    positions = [o.position for o in objects if o.position]
    if len(positions) == 2 and positions[0] == positions[1]:
        raise _not_in_grammar(text, f"two objects cannot both be in the {positions[0]}")
    return Caption(objects, any(held for _, held in read))


def template(text: str) -> str:
    """The same request in the template of the canonical captions, e.g. the held-out phrasing "in the middle
    there is a red box that is big" -> "a large red square in the center": to compare a phrasing with the
    template on the same objects. One object must name all four attributes; two objects their shape, color
    and size and no place (the two-object template has none)."""
    return _template_of(_fully_named(text))


def _fully_named(text: str) -> tuple[ObjectSpec, ...]:
    """The objects of a caption the template can restate, or a ValueError saying what it leaves open."""
    objects = parse(text).objects
    needed = ("shape", "color", "size", "position") if len(objects) == 1 else ("shape", "color", "size")
    for spec in objects:
        missing = [a for a in needed if getattr(spec, a) is None]
        if missing:
            raise ValueError(f"{text!r} leaves {' and '.join(missing)} open; the template names every one of "
                             f"{', '.join(needed)}")
        if len(objects) == 2 and spec.position is not None:
            raise ValueError(f"{text!r} places two objects; the two-object template has no places")
    return objects


def changed_captions(text: str) -> list[str]:
    """Every template caption that asks for something slightly different from a fully named one: one attribute
    of one object changed to each other value, and (two objects) one attribute swapped between them when they
    differ in it. "a large red circle in the top left" -> "a small red circle in the top left", "a large blue
    circle in the top left", ... (17 for one object; the hard negatives of a CLIP, config clip.hard_negatives).
    """
    return [caption for _, caption in changed_captions_by_kind(text)]


def changed_captions_by_kind(text: str) -> list[tuple[str, str]]:
    """changed_captions with what each changes: (attribute, caption) for one attribute of one object changed,
    ("binding", caption) for an attribute swapped between the two objects."""
    objects = _fully_named(text)
    attrs = ("shape", "color", "size", "position") if len(objects) == 1 else ("shape", "color", "size")
    changes = []
    for i, spec in enumerate(objects):
        for a in attrs:
            for value in ATTRIBUTE_WORDS[a]:
                if value != getattr(spec, a):
                    changes.append((a, objects[:i] + (replace(spec, **{a: value}),) + objects[i + 1:]))
    if len(objects) == 2:
        first, second = objects
        changes += [("binding", (replace(first, **{a: getattr(second, a)}), replace(second, **{a: getattr(first, a)})))
                    for a in attrs if getattr(first, a) != getattr(second, a)]
    return [(kind, _template_of(request)) for kind, request in changes]


def _template_of(objects) -> str:
    from .shapesworld import ShapeObject, caption  # the renderer's module (it imports this one); words only above

    return caption([ShapeObject(o.shape, o.color, o.size, o.position, (0.5, 0.5)) for o in objects])


# Every attribute value the evaluator's heads know, in vocabulary order (checked at import: the two lists agree).
assert tuple(ATTRIBUTE_WORDS["shape"]) == SHAPES and tuple(ATTRIBUTE_WORDS["size"]) == SIZE_NAMES
assert tuple(ATTRIBUTE_WORDS["position"]) == POSITIONS


# -- the prompts chapter 4 measures guidance on -------------------------------------------------------------
def evaluation_prompts(n: int, seed: int = 0) -> dict[str, list[str]]:
    """n prompts of each hard kind, drawn with `seed` (scenes never use the held-out color-shape pairs):

    two_objects: two fully named objects of different shapes and colors, no places ("a small red circle and
        a large blue square"): binding is the model's whole task;
    held_out: one fully placed object in a phrasing never trained on ("in the middle there is a red box
        that is big");
    open: one object with one or two attributes left open ("a red circle", "something big in the top left"),
        so many images are right and diversity over the open attributes can be measured.
    """
    from .shapesworld import ShapesWorld, caption  # the renderer's world; words only above

    world, g = ShapesWorld(16, 2, min_gap=0.0), torch.Generator().manual_seed(seed)
    out: dict[str, list[str]] = {"two_objects": [], "held_out": [], "open": []}
    while len(out["two_objects"]) < n:
        scene = world.scene(g)
        if len(scene) == 2 and scene[0].shape != scene[1].shape and scene[0].color != scene[1].color:
            text = caption(scene)
            if text not in out["two_objects"]:
                out["two_objects"].append(text)
    while len(out["held_out"]) < n or len(out["open"]) < n:
        scene = world.scene(g)[:1]
        if len(out["held_out"]) < n:
            out["held_out"].append(describe(scene, g, "held_out"))
        text = describe(scene, g, p_leave_out=0.5)
        spec = parse(text).objects[0].specified()
        if len(out["open"]) < n and 2 <= len(spec) <= 3 and text not in out["open"]:
            out["open"].append(text)
    return out

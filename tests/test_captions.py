"""Captions people write (captions.py): every caption describe() writes parses back to what the scene is, held-out
phrasings are recognised as such, and words or orders outside the grammar are clear errors."""
import pytest
import torch

from glide_minimal import captions as C
from glide_minimal import shapesworld as sw
from glide_minimal.datasets import load_shapesworld
from glide_minimal.models.text import get_tokenizer
from glide_minimal.vocabulary import WORD_VOCABULARIES


def _scenes(n, seed=0):
    world = sw.ShapesWorld(16, 2, held_out=(), min_gap=0.0)
    g = torch.Generator().manual_seed(seed)
    return [world.scene(g) for _ in range(n)], g


@pytest.mark.parametrize("phrasings", ["train", "held_out"])
def test_describe_parses_back_to_the_scene(phrasings):
    scenes, g = _scenes(400)
    for scene in scenes:
        text = C.describe(scene, g, phrasings)
        parsed = C.parse(text)
        assert parsed.held_out == (phrasings == "held_out"), text
        assert len(parsed.objects) == len(scene)
        for spec, obj in zip(parsed.objects, scene):
            assert spec.specified(), text
            assert all(getattr(obj, a) == v for a, v in spec.specified().items()), text


def test_training_captions_leave_attributes_open_and_vary_their_words():
    scenes, g = _scenes(600, seed=1)
    texts = [C.describe(s, g) for s in scenes]
    specs = [o for t in texts for o in C.parse(t).objects]
    for attr in ("shape", "color", "size", "position"):
        share_open = sum(getattr(o, attr) is None for o in specs) / len(specs)
        assert 0.1 < share_open < 0.9, (attr, share_open)
    words = {w for t in texts for w in t.split()}
    assert {"little", "big", "disk", "box", "plus", "upper", "middle", "something", "corner"} <= words
    held_out = {C.describe(s, g, "held_out") for s in scenes[:50]}
    assert not held_out & set(texts)


def test_canonical_captions_are_in_the_grammar():
    for shape, color, size, position in sw.all_combinations():
        obj = sw.ShapeObject(shape, color, size, position, sw.grid_center(position, size))
        parsed = C.parse(sw.caption([obj]))
        assert parsed.objects == (C.ObjectSpec(shape, color, size, position),) and not parsed.held_out
    two = C.parse("a small blue square and a large yellow cross").objects
    assert two == (C.ObjectSpec("square", "blue", "small"), C.ObjectSpec("cross", "yellow", "large"))


@pytest.mark.parametrize("text, expected", [
    ("a red circle", [("circle", "red", None, None)]),
    ("something blue in the top left", [(None, "blue", None, "top left")]),
    ("A big green box in the upper left corner!", [("square", "green", "large", "top left")]),
    ("a large red circle in the left", [("circle", "red", "large", "left")]),
    ("a circle that is small and red and there is a plus at the middle",
     [("circle", "red", "small", None), ("cross", None, None, "center")]),
    ("in the lower right there is a red disk that is tiny", [("circle", "red", "small", "bottom right")]),
    ("an object on the right", [(None, None, None, "right")]),
])
def test_paraphrases_in_the_grammar_never_error(text, expected):
    assert sw.parse_caption(text) == expected


@pytest.mark.parametrize("text, held_out", [
    ("a small red circle", False), ("a circle that is small and red", False), ("something tiny and blue", False),
    ("a red small circle", True), ("a small and red circle", True), ("a circle that is red and small", True),
    ("something small red", True), ("a red circle that is small", True), ("in the center is a red circle", True),
    ("a red circle and in the center there is a box", True),
])
def test_word_orders_training_never_uses_are_flagged_held_out(text, held_out):
    assert C.parse(text).held_out == held_out


@pytest.mark.parametrize("text, needle", [
    ("a lttle red circle", "did you mean 'little'"),
    ("a crimson circle", "known words:"),
    ("a red red circle", "two colors"),
    ("a circle red", "'that is'"),
    ("a red circle and a blue square and a green cross", "3 objects"),
    ("a red circle on the left and a blue box on the left", "cannot both be"),
    ("red", "starts with 'a', 'an' or 'something'"),
    ("", "has no words"),
])
def test_captions_outside_the_grammar_are_clear_errors(text, needle):
    with pytest.raises(ValueError, match="ShapesWorld caption|unknown word|has no words") as err:
        C.parse(text)
    assert needle in str(err.value)


def test_the_varied_tokenizer_knows_every_grammar_word_and_suggests_near_ones():
    tok = get_tokenizer("shapesworld-varied", 32)
    assert set(WORD_VOCABULARIES["shapesworld-varied"]) == set(C.caption_words())
    scenes, g = _scenes(200, seed=2)
    for s in scenes:
        for phrasings in ("train", "held_out"):
            assert len(tok.encode(C.describe(s, g, phrasings))) <= 32
    with pytest.raises(ValueError, match="did you mean 'tiny'"):
        tok.encode("a tiyn red circle")


def test_varied_dataset_fits_large_and_small_objects_side_by_side():
    images, texts = load_shapesworld(16, 2, num_scenes=300, captions="varied")
    assert images.shape == (300, 3, 16, 16) and len(texts) == 300
    assert len(set(texts)) > 250
    world = sw.ShapesWorld(16, 2, held_out=(), min_gap=0.0)
    g = torch.Generator().manual_seed(0)
    sizes = {tuple(sorted(o.size for o in s)) for s in (world.scene(g) for _ in range(300)) if len(s) == 2}
    assert ("large", "small") in sizes
    strict = sw.ShapesWorld(16, 2, held_out=())  # the canonical world's gap keeps a large one alone
    assert ("large", "small") not in {tuple(sorted(o.size for o in s))
                                      for s in (strict.scene(g) for _ in range(300)) if len(s) == 2}
    with pytest.raises(ValueError, match="max_objects=2"):
        load_shapesworld(16, 1, captions="varied")


def test_a_config_with_varied_captions_needs_two_object_shapesworld():
    import glide_minimal as gm

    cfg = gm.load_config("tutorial-text-varied")  # chapter 4's second model trains on them
    assert (cfg.data.captions, cfg.data.max_objects, cfg.model.tokenizer) == ("varied", 2, "shapesworld-varied")
    assert gm.load_config("tutorial-text-varied-gpu").data.captions == "varied"
    with pytest.raises(ValueError, match="data.max_objects: 2"):
        gm.load_config("tutorial-text-varied", {"data.max_objects": 1})
    with pytest.raises(ValueError, match="a folder or shards bring their own captions"):
        gm.load_config("tutorial-text-varied", {"data.dataset": "folder", "data.path": "somewhere"})
    with pytest.raises(ValueError, match="choose one of: canonical, varied"):
        gm.load_config("tutorial-text", {"data.captions": "natural"})
    # its second stage draws mostly two-object scenes; the share needs two-object scenes and is a probability
    assert gm.load_config("tutorial-text-varied").data.two_object_share == 0.8
    assert gm.load_config("tutorial-text-mixed").data.two_object_share == 0.5
    with pytest.raises(ValueError, match="two_object_share .* got 1.2 with max_objects 2"):
        gm.load_config("tutorial-text-varied", {"data.two_object_share": 1.2})
    with pytest.raises(ValueError, match="needs data.max_objects: 2; got 0.8 with max_objects 1"):
        gm.load_config("tutorial-text", {"data.two_object_share": 0.8})


@pytest.mark.parametrize("phrasings", ["train", "held_out"])
def test_template_restates_a_fully_named_caption_in_the_canonical_words(phrasings):
    world, g = sw.ShapesWorld(16, 2, min_gap=0.0), torch.Generator().manual_seed(5)
    checked = 0
    for _ in range(300):
        scene = world.scene(g)
        if phrasings == "held_out":  # held-out phrasings always place their objects: one object
            scene = scene[:1]
        text = C.describe(scene, g, phrasings, p_leave_out=0.0, p_place=1.0 if len(scene) == 1 else 0.0)
        assert C.template(text) == sw.caption(scene)
        checked += 1
    assert checked == 300
    assert C.template("in the middle there is a red box that is big") == "a large red square in the center"


@pytest.mark.parametrize("text, needle", [
    ("a red circle", "leaves size and position open"),
    ("a small red circle on the left and a large blue box", "places two objects"),
])
def test_template_refuses_a_caption_it_cannot_restate(text, needle):
    with pytest.raises(ValueError, match=needle):
        C.template(text)

"""ShapesWorld: captions are true, resolutions are consistent, held-out pairs stay held out."""
import pytest
import torch
import torch.nn.functional as F

from glide_minimal import shapesworld as sw


def scene(shape="circle", color="red", size="large", position="top left"):
    return [sw.ShapeObject(shape, color, size, position, sw.grid_center(position, size))]


def test_low_resolution_is_the_area_average_of_high_resolution():
    objects = scene("triangle", "blue", "small", "bottom right")
    torch.testing.assert_close(sw.render(objects, 16), F.avg_pool2d(sw.render(objects, 64)[None], 4)[0])


@pytest.mark.parametrize("shape", sw.SHAPES)
def test_object_center_has_the_named_color_and_corners_stay_black(shape):
    img = sw.render(scene(shape, "yellow", "large", "center"), 64)
    assert torch.allclose(img[:, 34, 32], torch.tensor(sw.COLORS["yellow"]) / 255)
    assert img[:, :2, :2].abs().max() == 0


def test_position_moves_the_object_to_its_grid_cell():
    img = sw.render(scene("square", "green", "small", "top right"), 64)
    ys, xs = torch.nonzero(img.sum(0) > 0, as_tuple=True)
    assert xs.float().mean() > 40 and ys.float().mean() < 24


def test_captions_follow_the_templates():
    assert sw.caption(scene()) == "a large red circle in the top left"
    assert sw.caption(scene(position="left")) == "a large red circle on the left"
    two = scene("square", "blue", "small", "left") + scene("cross", "yellow", "large", "right")
    assert sw.caption(two) == "a small blue square and a large yellow cross"


def test_held_out_pairs_appear_only_in_the_held_out_split():
    world = sw.ShapesWorld(16, held_out=(("triangle", "magenta"),))
    g = torch.Generator().manual_seed(0)
    train = [o for _ in range(300) for o in world.scene(g)]
    assert all((o.shape, o.color) != ("triangle", "magenta") for o in train)
    held = [o for _ in range(20) for o in world.scene(g, "held_out")]
    assert all((o.shape, o.color) == ("triangle", "magenta") for o in held)


def test_two_objects_never_overlap_and_sampling_is_seeded():
    world = sw.ShapesWorld(64, max_objects=2)
    imgs, caps, scenes = world.sample(40, torch.Generator().manual_seed(1))
    again, caps2, _ = world.sample(40, torch.Generator().manual_seed(1))
    assert torch.equal(imgs, again) and caps == caps2
    for objects in scenes:
        if len(objects) == 2:
            masks = [torch.zeros(256, 256, dtype=torch.bool) for _ in objects]
            for mask, o in zip(masks, objects):
                inside, (rows, cols) = sw._mask(o.shape, o.center, sw.SIZES[o.size], 256)  # its bounding box
                mask[rows, cols] = inside
            assert masks[0].any() and masks[1].any() and not (masks[0] & masks[1]).any()
    assert any(len(s) == 2 for s in scenes)


def test_two_object_share_sets_how_many_scenes_hold_two_objects():
    g = torch.Generator().manual_seed(0)
    for share, lo, hi in ((0.0, 0.0, 0.0), (0.8, 0.75, 0.85), (1.0, 1.0, 1.0)):
        world = sw.ShapesWorld(16, 2, min_gap=0.0, two_object_share=share)
        twos = sum(len(world.scene(g)) == 2 for _ in range(600)) / 600
        assert lo <= twos <= hi, (share, twos)
    # The default keeps the fair coin every shipped model was trained on: the same scenes as before the knob.
    a, b = sw.ShapesWorld(16, 2), sw.ShapesWorld(16, 2, two_object_share=0.5)
    ga, gb = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert [a.scene(ga) for _ in range(50)] == [b.scene(gb) for _ in range(50)]
    counts = [len(a.scene(ga)) for _ in range(400)]
    assert 0.4 < counts.count(2) / 400 < 0.6


def test_bad_inputs_name_the_valid_choices():
    with pytest.raises(ValueError, match="image_size must divide 256"):
        sw.render([], 48)
    with pytest.raises(ValueError, match="unknown split 'test'; choose one of: train, held_out"):
        sw.ShapesWorld(16).scene(torch.Generator(), "test")
    with pytest.raises(ValueError, match="held-out pair \\('hexagon', 'red'\\)"):
        sw.ShapesWorld(16, held_out=(("hexagon", "red"),))
    with pytest.raises(ValueError, match="two_object_share is a probability in \\[0, 1\\], got 1.5"):
        sw.ShapesWorld(16, 2, two_object_share=1.5)


def test_render_caption_is_the_scene_the_caption_fixes():
    obj = sw.ShapeObject("cross", "cyan", "small", "top right", sw.grid_center("top right", "small"))
    assert torch.equal(sw.render_caption("a small cyan cross in the top right", 32), sw.render([obj], 32))
    for vague in ["a small cyan cross", "a small cyan cross and a large red circle"]:
        with pytest.raises(ValueError, match="does not fix one image"):
            sw.render_caption(vague)


@pytest.mark.parametrize("size", ["small", "large"])
def test_region_mask_fills_the_whole_object_and_little_else(size):
    image = sw.render_caption(f"a {size} red square on the left", 64)
    mask = sw.region_mask("left", size, 64)
    assert mask.shape == (1, 64, 64) and set(mask.unique().tolist()) == {0.0, 1.0}
    assert (image * mask).sum() == 0  # no object pixel is kept
    side = sw.SIZES[size] + 2 * 0.04
    assert (1 - mask).mean().item() == pytest.approx(side**2, abs=0.03)
    assert mask[0, 32, 63] == 1  # the right edge is kept
    with pytest.raises(ValueError, match="unknown position 'middle'"):
        sw.region_mask("middle", size, 64)


def test_old_names_still_come_from_shapesworld():
    from glide_minimal import masks, vocabulary

    for name in ("box_mask", "freeform_mask", "downsample_mask"):
        assert getattr(sw, name) is getattr(masks, name)
    assert sw.vocabulary is vocabulary.caption_words and sw.SHAPES is vocabulary.SHAPES
    # the renderer's colors and sizes are the vocabulary's words, in its order (scenes draw by index)
    assert tuple(sw.COLORS) == vocabulary.COLOR_NAMES and tuple(sw.SIZES) == vocabulary.SIZE_NAMES
    assert sw.RENDER_SIZE == masks.DRAW_SIZE  # a mask lines up with a render at every resolution


def whole_canvas_render(objects: list[sw.ShapeObject], image_size: int) -> torch.Tensor:
    """The definition render() computes faster (only each object's bounding box): every shape's inequality
    over the whole 256 px canvas, later objects over earlier ones, area-averaged."""
    n = sw.RENDER_SIZE
    coords = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    y, x = torch.meshgrid(coords, coords, indexing="ij")
    canvas = torch.zeros(3, n, n, dtype=torch.float64)
    for o in objects:
        half = sw.SIZES[o.size] / 2
        dx, dy = (x - o.center[0]) / half, (y - o.center[1]) / half
        inside = {"circle": dx**2 + dy**2 <= 1, "square": (dx.abs() <= 0.85) & (dy.abs() <= 0.85),
                  "triangle": (dy <= 1) & (dy >= -1) & (dx.abs() <= (dy + 1) / 2),
                  "cross": ((dx.abs() <= 1) & (dy.abs() <= 0.3)) | ((dy.abs() <= 1) & (dx.abs() <= 0.3))}[o.shape]
        canvas[:, inside] = torch.tensor(sw.COLORS[o.color], dtype=torch.float64)[:, None] / 255
    return F.avg_pool2d(canvas[None], n // image_size)[0].float()


@pytest.mark.parametrize("image_size", [16, 32, 128])
def test_render_draws_exactly_the_whole_canvas_definition(image_size):
    g = torch.Generator().manual_seed(0)
    world = sw.ShapesWorld(image_size, 2, (), min_gap=0.0)  # objects a hair apart: boxes that nearly touch
    scenes = [world.scene(g) for _ in range(60)]
    scenes += [[sw.ShapeObject(s, c, z, p, sw.grid_center(p, z))] for s, c, z, p in sw.all_combinations()[::7]]
    scenes.append([sw.ShapeObject("circle", "red", "large", "center", (0.5, 0.5)),  # overlapping: draw order
                   sw.ShapeObject("cross", "blue", "small", "center", (0.5, 0.5))])
    for objects in scenes:
        assert torch.equal(sw.render(objects, image_size), whole_canvas_render(objects, image_size)), objects

"""The shipped emoji dataset (issue 16): data/emoji, as scripts/fetch_emoji.py wrote it, read from disk only
(never the network), and the script's parsing of emoji.json entries on a tiny fake entry."""
from __future__ import annotations

import importlib.util
import json
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "emoji"
FIELDS = ["file_name", "text", "paraphrases", "name", "short_names", "category", "subcategory", "split"]


def load_fetch_emoji():
    """scripts/fetch_emoji.py as a module (its main() does not run)."""
    spec = importlib.util.spec_from_file_location("fetch_emoji", ROOT / "scripts" / "fetch_emoji.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def fetch_emoji():
    return load_fetch_emoji()


@pytest.fixture(scope="module")
def lines() -> list[dict]:
    text = (DATA / "metadata.jsonl").read_text(encoding="utf-8")
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def test_metadata_parses_sorted_and_complete(lines):
    # 1,911 base emoji have a Google image in emoji-datasource 16.0.0 (3,786 PNGs with the skin-tone
    # variations, which the dataset leaves out).
    assert len(lines) > 1800
    assert all(list(line) == FIELDS for line in lines)
    names = [line["file_name"] for line in lines]
    assert names == sorted(names) and len(set(names)) == len(names)


def test_every_image_is_a_64px_rgba_png(lines):
    listed = {line["file_name"] for line in lines}
    on_disk = {path.relative_to(DATA).as_posix() for path in (DATA / "images").rglob("*") if path.is_file()}
    assert on_disk == listed
    for name in sorted(listed):
        with Image.open(DATA / name) as image:  # reads the header only
            assert (image.format, image.size, image.mode) == ("PNG", (64, 64), "RGBA"), name


def test_rgba_png_is_lossless_and_keeps_rgba(fetch_emoji):
    pytest.importorskip("oxipng")
    import io

    import numpy as np
    # a palette image with a transparent index: the script must give RGBA with the same pixels
    pixels = np.random.default_rng(0).integers(0, 4, (64, 64), dtype=np.uint8)
    source = Image.fromarray(pixels, mode="P")
    source.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255, 9, 9, 9])
    source.info["transparency"] = 3
    raw = io.BytesIO()
    source.save(raw, format="PNG")
    out = fetch_emoji.rgba_png(raw.getvalue(), "fixture")
    assert out == fetch_emoji.rgba_png(raw.getvalue(), "fixture")  # deterministic
    with Image.open(io.BytesIO(out)) as image:
        assert (image.format, image.size, image.mode) == ("PNG", (64, 64), "RGBA")
        assert np.array_equal(np.asarray(image), np.asarray(source.convert("RGBA")))
    with pytest.raises(ValueError, match="32x32"):
        small = io.BytesIO()
        Image.new("RGBA", (32, 32), (1, 2, 3, 255)).save(small, format="PNG")
        fetch_emoji.rgba_png(small.getvalue(), "small")


def test_captions(lines, fetch_emoji):
    for line in lines:
        text = line["text"]
        assert isinstance(text, str) and text and text == text.lower() == " ".join(text.split()), line
        assert text not in line["paraphrases"] and len(set(line["paraphrases"])) == len(line["paraphrases"])
        assert line["file_name"].startswith(f"images/{fetch_emoji.slug(line['category'])}/")


def test_held_out_split(lines, fetch_emoji):
    splits = Counter(line["split"] for line in lines)
    assert set(splits) == {"train", "test"}
    assert 0.03 <= splits["test"] / len(lines) <= 0.08, splits
    assert all(line["split"] == fetch_emoji.split_of(line["file_name"]) for line in lines)


def test_licence_and_readme():
    licence = (DATA / "LICENSE.md").read_text(encoding="utf-8")
    for needed in ("Noto Emoji", "The MIT License (MIT)", "Copyright (c) 2013 Cal Henderson", "Apache License 2.0",
                   "https://github.com/iamcal/emoji-data", "emoji-datasource-google", "16.0.0"):
        assert needed in licence, needed
    fetch_emoji = load_fetch_emoji()
    assert fetch_emoji.SHA512 in licence
    assert "python scripts/fetch_emoji.py" in (DATA / "README.md").read_text(encoding="utf-8")


def test_metadata_line_from_a_fake_entry(fetch_emoji):
    entry = {
        "name": "GRINNING FACE WITH SMILING EYES",
        "short_names": ["smile", "grinning_face_with_smiling_eyes", "smile"],
        "image": "1f604.png",
        "category": "Smileys & Emotion",
        "subcategory": "face-smiling",
        "has_img_google": True,
        "skin_variations": {"1F3FB": {"image": "1f604-1f3fb.png", "has_img_google": True}},
    }
    file_name = "images/smileys-emotion/1f604.png"
    assert fetch_emoji.metadata_line(entry) == {
        "file_name": file_name,
        "text": "grinning face with smiling eyes",
        "paraphrases": ["smile"],  # deduplicated, and without the caption itself
        "name": "GRINNING FACE WITH SMILING EYES",
        "short_names": ["smile", "grinning_face_with_smiling_eyes", "smile"],
        "category": "Smileys & Emotion",
        "subcategory": "face-smiling",
        "split": fetch_emoji.split_of(file_name),
    }
    nameless = dict(entry, name=None, short_names=["red_apple", "apple"], image="1f34e.png", category="Food & Drink")
    line = fetch_emoji.metadata_line(nameless)
    assert (line["text"], line["paraphrases"]) == ("red apple", ["apple"])
    assert line["file_name"] == "images/food-drink/1f34e.png"
    assert fetch_emoji.metadata_line(dict(entry, has_img_google=False)) is None
    # the skin-tone variation is no line of its own; lines come back sorted by file_name
    assert [x["file_name"] for x in fetch_emoji.metadata_lines([entry, nameless])] == [
        "images/food-drink/1f34e.png", file_name]


def test_a_wrong_tarball_is_refused(fetch_emoji, tmp_path):
    fake = tmp_path / "emoji-datasource-google-16.0.0.tgz"
    fake.write_bytes(b"not the package")
    with pytest.raises(fetch_emoji.IntegrityError, match="sha512"):
        fetch_emoji.check_tarball(fake)

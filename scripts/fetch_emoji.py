#!/usr/bin/env python3
"""Build the book's offline real captioned dataset "emoji" (issue 16) from the npm package
emoji-datasource-google@16.0.0: Google's Noto Emoji images, 64 px, with their names as captions.

What it does:
1. gets the package tarball (`npm pack emoji-datasource-google@16.0.0` in a temporary folder, or the file
   given with --tarball) and refuses it unless its sha512 is the one recorded below (SHA512);
2. reads package/emoji.json and, for every emoji with has_img_google (the base emoji only: no skin-tone
   variations), its 64 px PNG from package/img/google/64/, straight out of the tarball;
3. writes a Hugging Face ImageFolder into the output folder (default data/emoji):
       images/<category-slug>/<image file name>   64x64 RGBA PNG, re-encoded by Pillow, then oxipng (lossless)
       metadata.jsonl                             one JSON object a line, sorted by file_name:
           {"file_name", "text" (the caption: the name, lowercased), "paraphrases" (the short names, as
            words, other than the caption), "name", "short_names", "category", "subcategory",
            "split" ("train" or "test": about 5 %, by a hash of file_name)}
       LICENSE.md                                 the package's licence, its image-licence statement, attribution
       README.md                                  what the folder is, how to rebuild it, the counts and sizes
   The transparency is kept (the training loader composites on white). Nothing written depends on the
   time or the machine, so a re-run gives byte-identical files (with the same Pillow and zlib).

Run from the repository root (npm must be on PATH unless --tarball is given):
    python scripts/fetch_emoji.py
    python scripts/fetch_emoji.py --tarball emoji-datasource-google-16.0.0.tgz --out data/emoji
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

PACKAGE = "emoji-datasource-google"
VERSION = "16.0.0"
SOURCE_URL = "https://github.com/iamcal/emoji-data"
NPM_URL = f"https://www.npmjs.com/package/{PACKAGE}/v/{VERSION}"
TARBALL_URL = f"https://registry.npmjs.org/{PACKAGE}/-/{PACKAGE}-{VERSION}.tgz"
# sha512 of emoji-datasource-google-16.0.0.tgz (74,344,091 bytes), computed from the tarball `npm pack` fetched.
# It equals the registry's own record: `npm view emoji-datasource-google@16.0.0 dist.integrity` printed
# sha512-ZRexfzs7MVoLnmzZmNsO4TKhnAJp5D++Vm6PpUpH/jEQQlemp3l88CjZ+DoZ2faM9R4QxZkOPJCoT8DlPhfQ3A==
# (that base64 is this hex digest), and dist.shasum a80ac3e8106cbd4d8648ce758aa099e8827b6157 (sha1).
SHA512 = (
    "6517b17f3b3b315a0b9e6cd998db0ee132a19c0269e43fbe566e8fa54a47fe31"
    "104257a6a7797cf028d9f83a19d9f68cf51e10c5990e3c90a84fc0e53e17d0dc"
)
INTEGRITY = "sha512-" + base64.b64encode(bytes.fromhex(SHA512)).decode("ascii")

IMAGE_DIR = "package/img/google/64/"
IMAGE_SIZE = 64
TEST_PERCENT = 5  # the held-out split: file names whose hash falls in the first 5 of 100 buckets
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "data" / "emoji"


class IntegrityError(RuntimeError):
    """The tarball is not the one whose sha512 this script records."""


# ---- parsing: emoji.json entries -> metadata lines (no npm, no files) -------------------------------------

def slug(category: str) -> str:
    """A folder name for a category: "Smileys & Emotion" -> "smileys-emotion"."""
    return re.sub(r"[^a-z0-9]+", "-", category.lower()).strip("-")


def words(short_name: str) -> str:
    """A short name as words: "grinning_face" -> "grinning face" (hyphens, "+1" and the like are kept)."""
    return " ".join(short_name.replace("_", " ").split()).lower()


def split_of(file_name: str) -> str:
    """ "test" for about TEST_PERCENT % of file names, by the sha256 of the name; "train" for the rest."""
    bucket = int.from_bytes(hashlib.sha256(file_name.encode("utf-8")).digest()[:8], "big") % 100
    return "test" if bucket < TEST_PERCENT else "train"


def metadata_line(entry: dict[str, Any]) -> dict[str, Any] | None:
    """One emoji.json entry -> its metadata.jsonl object, or None without a Google image.

    text: the name, lowercased, or (no name) the first short name as words. paraphrases: the other short
    names as words, deduplicated, in their order, without the text itself.
    """
    if not entry.get("has_img_google"):
        return None
    short_names = [str(s) for s in entry.get("short_names") or []]
    name = (entry.get("name") or "").strip()
    text = " ".join(name.split()).lower() if name else (words(short_names[0]) if short_names else "")
    if not text:
        raise ValueError(f"emoji {entry.get('image')!r} has neither a name nor a short name")
    paraphrases: list[str] = []
    for short_name in short_names:
        phrase = words(short_name)
        if phrase and phrase != text and phrase not in paraphrases:
            paraphrases.append(phrase)
    category = entry["category"]
    file_name = f"images/{slug(category)}/{entry['image']}"
    return {
        "file_name": file_name,
        "text": text,
        "paraphrases": paraphrases,
        "name": entry.get("name"),
        "short_names": short_names,
        "category": category,
        "subcategory": entry.get("subcategory"),
        "split": split_of(file_name),
    }


def metadata_lines(emoji: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every base emoji with a Google image (skin_variations are not entries, so they are left out), sorted
    by file_name; two entries may not claim the same file."""
    lines = [line for line in map(metadata_line, emoji) if line is not None]
    lines.sort(key=lambda line: line["file_name"])
    repeated = [name for name, n in Counter(line["file_name"] for line in lines).items() if n > 1]
    if repeated:
        raise ValueError(f"file names claimed twice in emoji.json: {repeated[:5]}")
    return lines


# ---- the tarball ---------------------------------------------------------------------------------------

def sha512_of(path: Path) -> str:
    digest = hashlib.sha512()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_tarball(path: Path) -> None:
    """Refuse a tarball whose sha512 is not SHA512."""
    found = sha512_of(path)
    if found != SHA512:
        raise IntegrityError(
            f"{path} is not {PACKAGE}@{VERSION}: its sha512 is\n  {found}\nbut this script expects\n  {SHA512}\n"
            f"({INTEGRITY}). Delete it and fetch it again (npm pack {PACKAGE}@{VERSION})."
        )


def npm_pack(folder: Path) -> Path:
    """`npm pack PACKAGE@VERSION` into folder; the tarball's path."""
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit(f"npm is not on PATH: install Node.js, or download {TARBALL_URL} and pass --tarball")
    done = subprocess.run(
        [npm, "pack", "--silent", f"{PACKAGE}@{VERSION}"], cwd=folder, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"npm pack {PACKAGE}@{VERSION} failed ({done.returncode}):\n{done.stderr.strip()}")
    return folder / done.stdout.strip().splitlines()[-1]


def read_package(tarball: Path) -> tuple[list[dict[str, Any]], dict[str, bytes], dict[str, str]]:
    """emoji.json, the 64 px Google PNGs ({image file name: bytes}), and the LICENSE and README texts."""
    images: dict[str, bytes] = {}
    texts: dict[str, str] = {}
    with tarfile.open(tarball, "r:gz") as tar:
        for member in tar:
            if not member.isfile():
                continue
            if member.name.startswith(IMAGE_DIR) and member.name.endswith(".png"):
                images[member.name[len(IMAGE_DIR):]] = tar.extractfile(member).read()
            elif member.name in ("package/emoji.json", "package/LICENSE", "package/README.md"):
                texts[member.name[len("package/"):]] = tar.extractfile(member).read().decode("utf-8")
    missing = {"emoji.json", "LICENSE", "README.md"} - texts.keys()
    if missing:
        raise ValueError(f"{tarball} has no package/{', package/'.join(sorted(missing))}")
    return json.loads(texts.pop("emoji.json")), images, texts


def rgba_png(data: bytes, what: str) -> bytes:
    """The image as a 64x64 RGBA PNG (palette and grey+alpha sources converted, transparency kept),
    encoded by Pillow with no ancillary chunks (no time, no text), then recompressed by oxipng: lossless
    (the same pixels, about 11 % fewer bytes than Pillow's optimize=True) and deterministic."""
    import oxipng  # pyoxipng: only this script needs it
    with Image.open(io.BytesIO(data)) as image:
        if image.size != (IMAGE_SIZE, IMAGE_SIZE):
            raise ValueError(f"{what} is {image.size[0]}x{image.size[1]}, not {IMAGE_SIZE}x{IMAGE_SIZE}")
        rgba = image.convert("RGBA")
    if not np.asarray(rgba)[..., 3].any():
        raise ValueError(f"{what} is fully transparent")
    out = io.BytesIO()
    rgba.save(out, format="PNG", optimize=True)
    # the color type stays RGBA (no palette or grey reduction): what the README promises a reader
    return oxipng.optimize_from_memory(out.getvalue(), level=6, strip=oxipng.StripChunks.safe(),
                                       color_type_reduction=False, palette_reduction=False,
                                       grayscale_reduction=False, bit_depth_reduction=False)


# ---- the texts -----------------------------------------------------------------------------------------

def image_licence_lines(readme: str) -> list[str]:
    """The lines of the package README's "Image Sources" section about the Google image set and its licence
    (the table's header, its Google row, the Noto licence line), verbatim."""
    section = readme.split("## Image Sources", 1)[-1].split("\n## ", 1)[0]
    keep = r"^(\| Image Set |\| -+ \||\| Google |\* Android/Google/Noto )"
    lines = [line for line in section.splitlines() if re.match(keep, line)]
    if not any(line.startswith("* Android/Google/Noto ") for line in lines):
        raise ValueError("the package README no longer states the licence of its Google images")
    return lines


def licence_md(licence: str, readme: str) -> str:
    google = "\n".join(image_licence_lines(readme))
    return f"""# Licences of the emoji dataset

## Attribution

The images in `images/` are Google's **Noto Emoji** (https://github.com/googlefonts/noto-emoji), as the
64 px PNGs of the npm package `{PACKAGE}` version {VERSION}
({NPM_URL}), part of **emoji-datasource** (emoji-data) by Cal Henderson (iamcal),
{SOURCE_URL}. The captions and the other fields of `metadata.jsonl` come from that package's `emoji.json`.

- tarball: {TARBALL_URL}
- sha512: `{SHA512}`
- npm integrity: `{INTEGRITY}`

`scripts/fetch_emoji.py` re-encoded the PNGs (as RGBA: the same pixels, 64x64), sorted them into folders by
category and lowercased the names into captions; nothing else was changed.

## The images: Apache License 2.0

The package's README, section "Image Sources" (verbatim; the rows for the other image sets left out):

```text
{google}
```

The Apache License 2.0: https://www.apache.org/licenses/LICENSE-2.0; its full text is `LICENSE-APACHE-2.0.txt`
beside this file (section 4(a)). The package carries no copy of it and no other licence text than its own MIT
`LICENSE` below. (Noto Emoji's own repository puts its font files,
none of which are used here, under the SIL Open Font License 1.1.)

## The package and its data (emoji.json): MIT

The package's `LICENSE` file (its package.json also says `"license": "MIT"`), verbatim:

```text
{licence.strip()}
```
"""


def readme_md(lines: list[dict[str, Any]], image_bytes: int, metadata_bytes: int, licence_bytes: int) -> str:
    per_category = Counter((line["category"], slug(line["category"])) for line in lines)
    splits = Counter(line["split"] for line in lines)
    texts = Counter(line["text"] for line in lines)
    repeated = {text: n for text, n in texts.items() if n > 1}
    rows = "\n".join(
        f"| {category} | `images/{folder}/` | {n} |" for (category, folder), n in sorted(per_category.items())
    )
    repeats = ", ".join(f'"{text}" ({n} images)' for text, n in sorted(repeated.items())) or "none"
    total = image_bytes + metadata_bytes + licence_bytes
    return f"""# emoji: a small real captioned image dataset

{len(lines)} emoji images (64x64 RGBA PNG, transparent background) with short English captions, for the
book's real-data chapters and its "held-out captions" section. A Hugging Face ImageFolder:
`datasets.load_dataset("imagefolder", data_dir="data/emoji")` reads it, `metadata.jsonl` naming each image's
`file_name` and its caption `text`.

## How it was made

From the npm package `{PACKAGE}@{VERSION}` (emoji-datasource by iamcal,
{SOURCE_URL}; images: Google Noto Emoji), whose tarball is checked against its sha512
`{SHA512[:16]}...`, by `scripts/fetch_emoji.py`: every emoji of `emoji.json` with `has_img_google`, the base
emoji only (no skin-tone variations), its PNG from `img/google/64/`, re-encoded by Pillow as RGBA and
recompressed losslessly by oxipng (level 6). Licences and attribution: `LICENSE.md`.

Each line of `metadata.jsonl` (sorted by `file_name`):

- `file_name`: `images/<category slug>/<code points>.png`
- `text`: the caption: the emoji's name in emoji.json, lowercased ("grinning face with smiling eyes");
  the first short name, underscores as spaces, where it has no name
- `paraphrases`: its short names as words ("smile"), deduplicated, without the caption itself
- `name`, `short_names`, `category`, `subcategory`: as in emoji.json
- `split`: `test` for about {TEST_PERCENT} % of the images (the first {TEST_PERCENT} of 100 buckets of the sha256 of
  `file_name`), `train` for the rest

Rebuild it (needs npm and the network, or `--tarball` with the downloaded package; the output is byte-identical):

    python scripts/fetch_emoji.py

## Counts

{len(lines)} images: {splits['train']} train, {splits['test']} test.

| category | folder | images |
| --- | --- | --- |
{rows}

Captions used by more than one image: {repeats}.
Emoji without a name (caption from the first short name): {sum(not line["name"] for line in lines)}.

## Size

{total:,} bytes without this README: the images {image_bytes:,}, metadata.jsonl {metadata_bytes:,},
LICENSE.md {licence_bytes:,}.
"""


# ---- writing the folder --------------------------------------------------------------------------------

def build(tarball: Path, out: Path) -> list[dict[str, Any]]:
    """Check the tarball, then write the dataset into out (replaced whole); the metadata lines."""
    check_tarball(tarball)
    emoji, images, texts = read_package(tarball)
    lines = metadata_lines(emoji)
    if out.exists() and any(out.iterdir()) and not (out / "metadata.jsonl").is_file():
        raise SystemExit(f"{out} exists and holds no metadata.jsonl: not replacing a folder this script did not make")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-build-", dir=out.parent))
    try:
        image_bytes = 0
        for line in lines:
            image = line["file_name"].rsplit("/", 1)[1]
            if image not in images:
                raise ValueError(f"emoji.json names {image}, which {IMAGE_DIR} does not have")
            png = rgba_png(images[image], image)
            target = staging / line["file_name"]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(png)
            image_bytes += len(png)
        metadata = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode("utf-8")
        licence = licence_md(texts["LICENSE"], texts["README.md"]).encode("utf-8")
        (staging / "metadata.jsonl").write_bytes(metadata)
        (staging / "LICENSE.md").write_bytes(licence)
        shutil.copyfile(APACHE_TEXT, staging / "LICENSE-APACHE-2.0.txt")  # Apache-2.0 4(a): a copy travels along
        readme = readme_md(lines, image_bytes, len(metadata), len(licence))
        (staging / "README.md").write_bytes(readme.encode("utf-8"))
        for path in [staging, *staging.rglob("*")]:
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return lines


APACHE_TEXT = Path(__file__).with_name("apache-2.0.txt")  # the licence's standard text, verbatim


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tarball", type=Path, help=f"an already-downloaded {PACKAGE}-{VERSION}.tgz (no npm)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the output folder (default: data/emoji)")
    args = parser.parse_args(argv)
    try:
        if args.tarball is not None:
            lines = build(args.tarball, args.out)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                lines = build(npm_pack(Path(tmp)), args.out)
    except IntegrityError as error:
        print(f"fetch_emoji: refused: {error}", file=sys.stderr)
        return 1
    splits = Counter(line["split"] for line in lines)
    print(f"{args.out}: {len(lines)} images ({splits['train']} train, {splits['test']} test)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Your own captioned images, streamed to the Trainer: a folder or WebDataset tar shards.

- folder (data.dataset: folder): a directory of images with a metadata.jsonl whose lines carry "file_name"
  (relative to the directory; subfolders allowed) and "text", the Hugging Face ImageFolder convention; a
  metadata.csv with the same two columns works too. An optional "split" field ("train" / "test") holds images
  out of training.
- webdataset (data.dataset: webdataset): tar shards in the img2dataset / LAION layout, NNNN.jpg|png|webp beside
  NNNN.txt (and an optional NNNN.json), given as a brace-expanded list ("shards/{0000..0099}.tar"), local paths
  or URLs. The webdataset library reads the tars; the order is ours, so that it can resume (below).

Every image is decoded, converted to RGB (grayscale and palette images convert; transparency is composited on
white), centre-cropped to a square and resized to data.image_size, in DataLoader worker processes while the
model trains. An upsampler's low-res input is the area-average of that same crop (as for ShapesWorld).

Exact resume. The folder is indexed, so step k's images are the ones draw_indices(cfg, N, k) names, as for the
in-memory datasets: a resumed run reads the same files. Shards are read in order, so each rank reads a fixed
disjoint set of shards (no two ranks share a shard), split again between "lanes", one per worker: step k's
batch of a rank comes from lane k % lanes. A lane's stream (its shards in a seeded order per epoch, through a
seeded shuffle buffer) is a fixed sequence; the checkpoint records how far each lane has read, and a resumed
lane skips that many samples (tar reading only, no decoding) before it goes on.

Bad data never stops or silently corrupts a run: an unreadable image, a missing caption or image file, or an
image smaller than the model are skipped, with one warning per kind and counts in the training log
("data_skipped"). An empty folder, a malformed metadata line and a shard that cannot be opened are errors.
"""
from __future__ import annotations

import csv
import io
import json
import random
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image

from .checks import stream_seed
from .conditioning import batch_inputs, draw_indices, draw_step, rank_slice
from .config import Config, low_res_size
from .datasets import load_dataset
from .masks import area_downsample
from .models.text import config_tokenizer

STREAMED = ("folder", "webdataset")  # the data.dataset values this module reads
IMAGE_SUFFIXES = ("jpg", "jpeg", "png", "webp")  # the image members of a WebDataset sample, in order of preference
SKIP_KINDS = {  # kind -> what the warning and the log call it
    "corrupt": "unreadable or corrupt images",
    "missing_caption": "samples without a caption",
    "missing_image": "samples without an image file",
    "too_small": "images smaller than the model's size",
    "truncated": "captions longer than the text context (truncated)",
}


class SkipSample(Exception):
    """A sample that cannot be trained on; kind is a SKIP_KINDS key."""

    def __init__(self, kind: str, detail: str):
        super().__init__(f"{SKIP_KINDS[kind]}: {detail}")
        self.kind, self.detail = kind, detail


# -- one image ------------------------------------------------------------------------------------------------
def to_rgb(img: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Any PIL image as RGB: grayscale, CMYK and palette images convert; transparency is composited on
    `background` (a transparent pixel must not become black, which is what dropping alpha does)."""
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*background, 255))
        canvas.alpha_composite(rgba)
        return canvas.convert("RGB")
    return img.convert("RGB")


def square_resize(img: Image.Image, size: int) -> Image.Image:
    """The centred square crop of img, resized to size x size (bicubic; PIL widens the filter when it shrinks,
    so a large photo is antialiased rather than aliased)."""
    w, h = img.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return img.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.BICUBIC)


def decode_image(source: bytes | str | Path, size: int, name: str = "") -> torch.Tensor:
    """An image file (its bytes or its path) as [3, size, size] in [-1, 1]. Raises SkipSample("corrupt") for an
    unreadable file and SkipSample("too_small") for one whose shorter side is below size."""
    name = name or str(source if not isinstance(source, bytes) else "image")
    try:
        img = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
        if min(img.size) < size:
            raise SkipSample("too_small", f"{name} is {img.size[0]}x{img.size[1]}, the model needs {size}x{size}")
        img.load()  # decodes now: a truncated file fails here, not later inside numpy
        rgb = square_resize(to_rgb(img), size)
    except SkipSample:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise SkipSample("corrupt", f"{name}: {e}") from None
    pixels = torch.from_numpy(np.asarray(rgb, dtype=np.float32))  # [size, size, 3] in 0..255
    return (pixels / 127.5 - 1).permute(2, 0, 1).contiguous()


class SkipLog:
    """Counts of skipped samples per kind, with one warning per kind the first time it is seen."""

    def __init__(self, where: str):
        self.where, self.counts, self.warned = where, Counter(), set()

    def add(self, kind: str, detail: str, count: int = 1) -> None:
        self.counts[kind] += count
        if kind not in self.warned:
            self.warned.add(kind)
            warnings.warn(f"{self.where}: skipping {SKIP_KINDS[kind]}, e.g. {detail}. Each kind is warned about once; "
                          "the training log counts them (data_skipped).", stacklevel=3)


# -- a folder with metadata.jsonl ------------------------------------------------------------------------------
def read_metadata(root: Path) -> list[dict]:
    """The rows of root/metadata.jsonl (or metadata.csv): dicts with at least "file_name". A line that is not a
    JSON object is an error naming the file and the line number."""
    jsonl, table = root / "metadata.jsonl", root / "metadata.csv"
    if jsonl.exists():
        rows = []
        for number, line in enumerate(jsonl.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{jsonl} line {number} is not JSON ({e.msg}): {line[:80]!r}") from None
            if not isinstance(row, dict) or "file_name" not in row:
                raise ValueError(f"{jsonl} line {number} must be a JSON object with \"file_name\" and \"text\", "
                                 f"got {line[:80]!r}")
            rows.append(row)
        return rows
    if table.exists():
        with open(table, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if "file_name" not in (reader.fieldnames or []):
                raise ValueError(f"{table} needs a header with the columns file_name and text, got {reader.fieldnames}")
            return list(reader)
    if not root.is_dir():
        raise FileNotFoundError(f"data.path {str(root)!r} is not a folder")
    raise FileNotFoundError(f"{root} has no metadata.jsonl or metadata.csv: write one line per image, e.g. "
                            '{"file_name": "images/0001.png", "text": "a red apple"}')


@dataclass
class FolderIndex:
    """The usable images of a folder: files[i] (absolute paths) and captions[i], for one split."""

    root: Path
    files: list[Path]
    captions: list[str]
    skipped: Counter = field(default_factory=Counter)

    def __len__(self) -> int:
        return len(self.files)


def resolve_data_path(path: str | Path) -> Path:
    """A relative data.path is looked up from the working directory, then from this checkout's root (so a
    shipped config's data/emoji works from book/ and from anywhere inside the repository)."""
    path = Path(path)
    checkout = Path(__file__).resolve().parents[1] / path
    return path if path.is_absolute() or path.exists() or not checkout.exists() else checkout


def index_folder(root: str | Path, image_size: int, split: str = "train") -> FolderIndex:
    """Index root's metadata for `split` (rows without a "split" field are training rows). Rows whose image is
    missing, unreadable (its header) or smaller than image_size, or whose caption is missing, are skipped with
    one warning per kind. An empty result is an error."""
    root = resolve_data_path(root)
    if split not in ("train", "test"):
        raise ValueError(f"unknown split {split!r}; choose one of: train, test")
    log = SkipLog(str(root))
    files, captions = [], []
    rows = read_metadata(root)
    for row in rows:
        if row.get("split", "train") != split:
            continue
        name, text = str(row["file_name"]), row.get("text")
        path = root / name
        if not isinstance(text, str) or not text.strip():
            log.add("missing_caption", f"{name} has text {text!r}")
            continue
        if not path.is_file():
            log.add("missing_image", f"{name} does not exist")
            continue
        try:
            with Image.open(path) as img:  # reads the header only
                width, height = img.size
        except (OSError, ValueError, SyntaxError) as e:
            log.add("corrupt", f"{name}: {e}")
            continue
        if min(width, height) < image_size:
            log.add("too_small", f"{name} is {width}x{height}, the model needs {image_size}x{image_size}")
            continue
        files.append(path)
        captions.append(text.strip())
    if not files:
        why = f"{len(rows)} metadata rows" + (f", skipped: {dict(log.counts)}" if log.counts else "")
        raise ValueError(f"{root} has no usable {split} images ({why})")
    return FolderIndex(root, files, captions, log.counts)


class FolderImages(torch.utils.data.Dataset):
    """index -> (image [3, S, S] in [-1, 1], caption, skipped kinds). An image that fails to decode (its header
    was fine) is replaced by the next one that decodes, so the batch keeps its size and stays a function of the
    step; the replacement is reported."""

    def __init__(self, index: FolderIndex, image_size: int):
        self.index, self.image_size = index, image_size

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str, list[tuple[str, str]]]:
        skipped = []
        for j in range(len(self.index)):
            k = (i + j) % len(self.index)
            try:
                return decode_image(self.index.files[k], self.image_size), self.index.captions[k], skipped
            except SkipSample as e:
                skipped.append((e.kind, e.detail))
        raise ValueError(f"no image of {self.index.root} decodes: {skipped[:3]}")


class StepIndices:
    """The DataLoader's batch sampler: for step, step + 1, ..., this rank's slice of draw_indices."""

    def __init__(self, cfg: Config, num_images: int, start_step: int, examples: slice):
        self.cfg, self.num_images, self.start_step, self.examples = cfg, num_images, start_step, examples

    def __iter__(self) -> Iterator[list[int]]:
        step = self.start_step
        while True:
            yield draw_indices(self.cfg, self.num_images, step)[self.examples].tolist()
            step += 1


def collate_folder(samples: list) -> tuple[torch.Tensor, list[str], dict]:
    skipped = [s for _, _, kinds in samples for s in kinds]
    return torch.stack([img for img, _, _ in samples]), [text for _, text, _ in samples], {"skipped": skipped}


def load_folder(root: str | Path, image_size: int, split: str = "train") -> tuple[torch.Tensor, list[str]]:
    """Every image of a small folder's split in memory: ([N, 3, S, S] in [-1, 1], N captions)."""
    images = FolderImages(index_folder(root, image_size, split), image_size)
    batch = [images[i] for i in range(len(images))]
    return torch.stack([img for img, _, _ in batch]), [text for _, text, _ in batch]


# -- WebDataset shards -----------------------------------------------------------------------------------------
def expand_shards(spec: str) -> list[str]:
    """'shards/{0000..0003}.tar' -> the four names; several specs may be joined with '::'."""
    from braceexpand import braceexpand  # a dependency of webdataset (lazy, as webdataset below)

    urls = [url for part in spec.split("::") if part.strip() for url in braceexpand(part.strip())]
    if not urls:
        raise ValueError(f"data.path {spec!r} names no shards; e.g. 'shards/{{0000..0099}}.tar'")
    return urls


def assign_shards(urls: list[str], seed: int, rank: int, world: int, lanes: int) -> list[list[str]]:
    """This rank's shards, split into `lanes` lists: a seeded permutation of all shards, dealt round-robin to
    the world * lanes (rank, lane) pairs, so no two ranks (or lanes) ever read the same shard."""
    order = [urls[i] for i in torch.randperm(len(urls), generator=torch.Generator().manual_seed(seed))]
    return [order[rank * lanes + lane::world * lanes] for lane in range(lanes)]


class ShardError(RuntimeError):
    """A shard that cannot be opened or read."""


def raw_samples(shards: list[str], seed: int) -> Iterator[dict]:
    """A lane's endless raw samples (dicts of undecoded bytes): its shards, in a seeded order per epoch."""
    # here, not at the top: webdataset takes about a second to import, and only shards need it
    from webdataset.tariterators import tarfile_samples

    epoch = 0
    while True:
        for url in random.Random(stream_seed(seed, epoch)).sample(shards, len(shards)):
            def fail(exn: Exception, url: str = url) -> bool:
                raise ShardError(f"cannot read WebDataset shard {url}: {exn.args[0] if exn.args else exn!r}")
            try:
                yield from (s for s in tarfile_samples([{"url": url}], handler=fail) if s)
            except ShardError:
                raise
            except Exception as e:  # a URL that does not resolve fails inside the reader's pipe
                raise ShardError(f"cannot read WebDataset shard {url}: {e}") from None
        epoch += 1


def shuffled(samples: Iterator[dict], buffer: int, seed: int) -> Iterator[dict]:
    """A seeded shuffle buffer over an endless stream: fill `buffer` samples, then emit a random one and put the
    next sample in its place. Deterministic, so a resumed lane can replay it."""
    rng, pool = random.Random(seed), []
    for sample in samples:
        if len(pool) < buffer:
            pool.append(sample)
            continue
        i = rng.randrange(buffer)
        yield pool[i]
        pool[i] = sample


def decode_sample(sample: dict, image_size: int) -> tuple[torch.Tensor, str]:
    """A raw WebDataset sample -> (image [3, S, S], caption); SkipSample if it has no caption or image."""
    name = f"{sample.get('__url__', '?')}:{sample.get('__key__', '?')}"
    text = sample.get("txt")
    if text is None and "json" in sample:
        try:
            meta = json.loads(sample["json"])
            text = meta.get("caption") or meta.get("text") if isinstance(meta, dict) else None
        except json.JSONDecodeError:
            text = None
    text = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    if not isinstance(text, str) or not text.strip():
        raise SkipSample("missing_caption", f"{name} has no .txt caption")
    key = next((k for k in IMAGE_SUFFIXES if k in sample), None)
    if key is None:
        raise SkipSample("missing_image", f"{name} has no {'/'.join(IMAGE_SUFFIXES)} image")
    return decode_image(sample[key], image_size, f"{name}.{key}"), text.strip()


class ShardStream(torch.utils.data.IterableDataset):
    """This rank's batches from its shards, from step `start_step` on, each lane resuming at offsets[lane].

    Worker w of W (W = lanes) serves the steps start_step + w, start_step + w + W, ..., i.e. the lane
    (start_step + w) % W, which the DataLoader hands out in step order. Yields (images [n, 3, S, S], n captions,
    {"lane", "read": raw samples the lane has read after this batch, "skipped": [(kind, detail)]}).
    """

    def __init__(self, lanes: list[list[str]], batch_size: int, image_size: int, seed: int, rank: int,
                 buffer: int, start_step: int = 0, offsets: list[int] | None = None):
        super().__init__()
        self.lanes, self.batch_size, self.image_size = lanes, batch_size, image_size
        self.seed, self.rank, self.buffer, self.start_step = seed, rank, buffer, start_step
        self.offsets = offsets or [0] * len(lanes)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, list[str], dict]]:
        info = torch.utils.data.get_worker_info()
        worker = info.id if info else 0
        lane = (self.start_step + worker) % len(self.lanes)
        lane_seed = stream_seed(self.seed, self.rank, lane)
        stream = shuffled(raw_samples(self.lanes[lane], lane_seed), self.buffer, stream_seed(lane_seed, 1))
        read = self.offsets[lane]
        for _ in range(read):  # replay without decoding
            next(stream)
        while True:
            images, captions, skipped = [], [], []
            while len(images) < self.batch_size:
                sample = next(stream)
                read += 1
                try:
                    image, text = decode_sample(sample, self.image_size)
                except SkipSample as e:
                    skipped.append((e.kind, e.detail))
                    continue
                images.append(image)
                captions.append(text)
            yield torch.stack(images), captions, {"lane": lane, "read": read, "skipped": skipped}


def shard_captions(urls: list[str], limit: int) -> list[str]:
    """The captions (.txt members) of the shards in the given order, up to `limit`."""
    import tarfile  # (lazy, as webdataset: only shards need them)

    from webdataset.gopen import gopen  # opens local paths, URLs (through curl) and pipe: specs alike

    captions = []
    for url in urls:
        try:
            with gopen(url) as stream, tarfile.open(fileobj=stream, mode="r|*") as tar:
                for member in tar:
                    if member.name.endswith(".txt") and (f := tar.extractfile(member)):
                        captions.append(f.read().decode("utf-8", "replace").strip())
                        if len(captions) >= limit:
                            return captions
        except (OSError, tarfile.TarError) as e:
            raise ShardError(f"cannot read WebDataset shard {url}: {e}") from None
    return captions


def training_captions(cfg: Config, limit: int = 200_000) -> list[str]:
    """Captions of cfg's training data, to learn a BPE from: every caption of a folder, ShapesWorld's, or the
    first `limit` of the shards (in the order data.path lists them)."""
    data = cfg.data
    if data.dataset == "folder":
        return index_folder(data.path, data.image_size).captions[:limit]
    if data.dataset == "webdataset":
        return shard_captions(expand_shards(data.path), limit)
    captions = load_dataset(data, "train")[1]
    if not isinstance(captions, list):
        raise ValueError(f"data.dataset {data.dataset!r} has class labels, not captions to learn a BPE from")
    return captions[:limit]


# -- the Trainer's view ----------------------------------------------------------------------------------------
class StreamingData:
    """Training batches of a folder or of shards, decoded ahead of the step by DataLoader workers.

    batch(step, diffusion) gives what conditioning.training_batch gives for the in-memory datasets: the same
    draws (t, noise, caption dropout, crops, augmentation) from (seed, step), on this rank's slice.
    """

    def __init__(self, cfg: Config, rank: int, world: int, device: torch.device):
        data = cfg.data
        self.cfg, self.rank, self.world, self.device = cfg, rank, world, device
        self.examples = rank_slice(cfg.train.batch_size, rank, world)
        text = cfg.clip if cfg.task == "clip" else cfg.model
        self.tokenizer = config_tokenizer(text)
        self.log = SkipLog(data.path)
        self.loader: Iterator | None = None
        self.next_step: int | None = None
        if data.dataset == "folder":
            self.index = index_folder(data.path, data.image_size)
            for kind, count in self.index.skipped.items():
                self.log.counts[kind] += count  # indexing warned already
            self.num_images, self.lanes, self.read = len(self.index), None, None
            return
        urls = expand_shards(data.path)
        if len(urls) < world:
            raise ValueError(f"data.path {data.path!r} has {len(urls)} shards for {world} processes: each process "
                             "reads shards of its own, so give at least one shard per process")
        lanes = max(1, min(data.num_workers, len(urls) // world))  # every lane needs a shard
        self.lanes = assign_shards(urls, cfg.train.seed, rank, world, lanes)
        self.num_images, self.read = 1, [0] * lanes  # (draw_step's idx is unused: the stream decides the images)

    def _open(self, step: int) -> None:
        data = self.cfg.data
        if data.dataset == "folder":
            dataset = FolderImages(self.index, data.image_size)
            sampler = StepIndices(self.cfg, self.num_images, step, self.examples)
            self.loader = iter(torch.utils.data.DataLoader(
                dataset, batch_sampler=sampler, num_workers=data.num_workers, collate_fn=collate_folder,
                prefetch_factor=2 if data.num_workers else None))
        else:
            if step and not any(self.read):
                raise ValueError(f"a WebDataset run is read in order: step {step} can only be reached by resuming "
                                 "a checkpoint that records how far each lane has read")
            stream = ShardStream(self.lanes, len(range(*self.examples.indices(self.cfg.train.batch_size))),
                                 data.image_size, self.cfg.train.seed, self.rank, data.shuffle_buffer, step,
                                 list(self.read))
            workers = len(self.lanes) if data.num_workers else 0
            self.loader = iter(torch.utils.data.DataLoader(stream, batch_size=None, num_workers=workers,
                                                           prefetch_factor=2 if workers else None))
        self.next_step = step

    def batch(self, step: int, diffusion) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        """This rank's slice of step's batch: x_start, t, noise, model_kwargs."""
        if step != self.next_step:
            self._open(step)
        images, captions, info = next(self.loader)
        self.next_step = step + 1
        for kind, detail in info["skipped"]:
            self.log.add(kind, detail)
        if self.read is not None:
            self.read[info["lane"]] = info["read"]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            tokens, mask = self.tokenizer.padded_tokens_and_mask(captions)
        for w in caught:  # one warning per kind, not one per caption
            if "context" in str(w.message):  # truncated (word level, learned BPE) or cut (GLIDE BPE) to the context
                self.log.add("truncated", str(w.message))
            else:
                warnings.warn(w.message, stacklevel=2)
        cond = {"tokens": tokens, "mask": mask}
        if self.cfg.task == "diffusion" and self.cfg.model.super_res:
            cond["low_res"] = area_downsample(images, low_res_size(self.cfg))  # the same crop, seen small
        draws = draw_step(self.cfg, images.shape[1:], self.num_images, diffusion.num_timesteps, step)
        draws = draws.take(self.examples)
        cond = {k: v.to(self.device) for k, v in cond.items()}
        return batch_inputs(self.cfg, images.to(self.device), cond, draws, diffusion, step, self.examples)

    # -- resuming and the log --------------------------------------------------------------------------------
    def state(self, distributed: bool) -> dict:
        """What a checkpoint records (a collective under torchrun): the skip counts so far, summed over the
        processes, and for shards, per process how far each lane has read."""
        state = {"skipped": self.skipped(distributed)}
        if self.read is None:
            return state
        reads = [list(self.read)]
        if distributed:
            reads = [None] * self.world
            dist.all_gather_object(reads, list(self.read))
        return {**state, "lanes": len(self.read), "read": reads}

    def load_state(self, state: dict, path: Path) -> None:
        if self.rank == 0:  # the totals continue on one process; skipped() sums them over all
            self.log.counts = Counter(state.get("skipped") or {})
            self.log.warned.update(self.log.counts)
        if self.read is None:
            return
        reads = state.get("read") or []
        if state.get("lanes") != len(self.read) or len(reads) != self.world:
            raise ValueError(f"{path} was written by a WebDataset run with {state.get('lanes')} lanes per process on "
                             f"{len(reads)} processes; this run has {len(self.read)} on {self.world}: resume with "
                             "the same data.num_workers and process count (the lanes decide which shards each reads)")
        self.read = list(reads[self.rank])

    def skipped(self, distributed: bool) -> dict[str, int]:
        """Skipped samples per kind, summed over the processes (a collective under torchrun)."""
        counts = torch.tensor([self.log.counts[k] for k in SKIP_KINDS], dtype=torch.long)
        if distributed:
            dist.all_reduce(counts)
        return {k: int(c) for k, c in zip(SKIP_KINDS, counts) if c}

"""Your own captioned images (glide_minimal/imagetext.py): decoding and RGB conversion, the folder format
(metadata.jsonl / .csv), WebDataset shards, bad data, and exact resume on both formats (one process and two
gloo processes)."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from conftest import (
    FOLDER_CAPTIONS,
    TINY_TEXT,
    assert_same_tensors,
    nested,
    picture,
    png_bytes,
    straight_and_resumed,
    tiny_text_config,
    write_folder,
    write_shards,
)
from glide_minimal.checkpoint import load_tensors
from glide_minimal.conditioning import draw_indices, draw_step
from glide_minimal.config import load_config
from glide_minimal.imagetext import (
    FolderImages,
    ShardError,
    SkipSample,
    assign_shards,
    decode_image,
    expand_shards,
    index_folder,
    load_folder,
    read_metadata,
    square_resize,
    to_rgb,
)
from glide_minimal.train import CHECKPOINT, Trainer


def folder_config(path: Path | str, dataset: str = "folder", overrides: dict | None = None):
    return tiny_text_config({"data.dataset": dataset, "data.path": str(path), "data.num_workers": 0,
                             "data.shuffle_buffer": 4, **(overrides or {})})


# -- one image ------------------------------------------------------------------------------------------------
def test_transparency_is_composited_on_white_and_every_mode_becomes_rgb():
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))  # fully transparent red
    rgba.putpixel((0, 0), (0, 0, 255, 255))
    rgb = np.asarray(to_rgb(rgba))
    assert rgb.shape == (4, 4, 3) and tuple(rgb[1, 1]) == (255, 255, 255) and tuple(rgb[0, 0]) == (0, 0, 255)
    palette = rgba.convert("P")  # the palette keeps a transparent index
    palette.info["transparency"] = palette.getpixel((1, 1))
    assert tuple(np.asarray(to_rgb(palette))[1, 1]) == (255, 255, 255)
    for mode in ("L", "LA", "1", "CMYK", "I;16"):
        assert to_rgb(picture(1, 8, mode)).mode == "RGB"
    gray = np.asarray(to_rgb(picture(1, 8, "L")))
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()


def test_square_resize_keeps_the_centre_of_a_wide_image():
    wide = Image.new("RGB", (30, 10), (255, 0, 0))
    wide.paste((0, 255, 0), (10, 0, 20, 10))  # the centre third is green
    out = np.asarray(square_resize(wide, 5))
    assert out.shape == (5, 5, 3) and (out[..., 1] > 250).all() and (out[..., 0] < 5).all()


def test_decode_image_scales_to_minus_one_one_and_names_bad_files(tmp_path):
    img = decode_image(png_bytes(picture(3, 16)), 16)
    expected = torch.from_numpy(np.asarray(picture(3, 16), dtype=np.float32)).permute(2, 0, 1) / 127.5 - 1
    assert img.shape == (3, 16, 16) and torch.equal(img, expected)  # same size: no resampling
    with pytest.raises(SkipSample, match="x.png is 12x12, the model needs 16x16") as small:
        decode_image(png_bytes(picture(0, 12)), 16, "x.png")
    assert small.value.kind == "too_small"
    truncated = png_bytes(picture(0, 32))[:-200]
    for data in (b"not an image", truncated):
        with pytest.raises(SkipSample) as bad:
            decode_image(data, 16, "y.png")
        assert bad.value.kind == "corrupt" and "y.png" in str(bad.value)


# -- the folder format ----------------------------------------------------------------------------------------
def test_folder_with_subfolders_loads_every_image_and_caption(tmp_path):
    write_folder(tmp_path, n=6, size=16)
    images, captions = load_folder(tmp_path, 16)
    assert images.shape == (6, 3, 16, 16) and captions == FOLDER_CAPTIONS
    assert torch.equal(images[4], decode_image(tmp_path / "b/0004.png", 16))


def test_metadata_csv_works_like_jsonl(tmp_path):
    a, b = write_folder(tmp_path / "j", n=4), write_folder(tmp_path / "c", n=4, csv=True)
    assert [r["text"] for r in read_metadata(a)] == [r["text"] for r in read_metadata(b)]
    assert index_folder(b, 16).captions == FOLDER_CAPTIONS[:4]


def test_a_metadata_line_that_is_not_json_names_its_number(tmp_path):
    write_folder(tmp_path, n=3)
    lines = (tmp_path / "metadata.jsonl").read_text().splitlines()
    lines.insert(2, '{"file_name": "a/0001.png", "text": oops}')
    (tmp_path / "metadata.jsonl").write_text("\n".join(lines))
    with pytest.raises(ValueError, match=r"metadata.jsonl line 3 is not JSON"):
        read_metadata(tmp_path)


def test_missing_metadata_and_empty_folders_are_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="has no metadata.jsonl or metadata.csv"):
        read_metadata(tmp_path)
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        read_metadata(tmp_path / "nowhere")
    (tmp_path / "metadata.jsonl").write_text("")
    with pytest.raises(ValueError, match="has no usable train images"):
        index_folder(tmp_path, 16)


def test_bad_rows_are_skipped_with_one_warning_per_kind_and_counted(tmp_path):
    write_folder(tmp_path, n=6)
    rows = [json.loads(line) for line in (tmp_path / "metadata.jsonl").read_text().splitlines()]
    rows[0]["text"] = ""  # missing caption
    rows[1]["file_name"] = "a/gone.png"  # missing file
    rows[2]["file_name"] = "a/gone2.png"  # a second of the same kind: still one warning
    (tmp_path / "b/0004.png").write_bytes(b"garbage")  # corrupt
    picture(5, 8).save(tmp_path / "a/0005.png")  # too small for 16 px
    (tmp_path / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        index = index_folder(tmp_path, 16)
    assert len(index) == 1 and index.captions == [FOLDER_CAPTIONS[3]]
    assert index.skipped == {"missing_caption": 1, "missing_image": 2, "corrupt": 1, "too_small": 1}
    messages = [str(w.message) for w in caught]
    assert len(messages) == 4, messages
    assert any("a/gone.png does not exist" in m for m in messages)
    assert any("a/0005.png is 8x8, the model needs 16x16" in m for m in messages)


def test_the_split_field_holds_images_out_of_training(tmp_path):
    write_folder(tmp_path, n=6)
    rows = [json.loads(line) for line in (tmp_path / "metadata.jsonl").read_text().splitlines()]
    for r in rows[:2]:
        r["split"] = "test"
    (tmp_path / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert len(index_folder(tmp_path, 16)) == 4 and index_folder(tmp_path, 16, "test").captions == FOLDER_CAPTIONS[:2]
    with pytest.raises(ValueError, match="unknown split 'val'; choose one of: train, test"):
        index_folder(tmp_path, 16, "val")


def test_an_image_that_fails_to_decode_is_replaced_by_the_next_and_reported(tmp_path):
    write_folder(tmp_path, n=4)
    index = index_folder(tmp_path, 16)
    head = (tmp_path / "b/0002.png").read_bytes()[:50]  # the header reads, the pixels do not
    (tmp_path / "b/0002.png").write_bytes(head)
    image, caption, skipped = FolderImages(index, 16)[2]
    assert caption == FOLDER_CAPTIONS[3] and torch.equal(image, decode_image(tmp_path / "a/0003.png", 16))
    assert [kind for kind, _ in skipped] == ["corrupt"]


# -- training on a folder -------------------------------------------------------------------------------------
def test_folder_batches_are_the_drawn_files_with_the_in_memory_draws(tmp_path):
    write_folder(tmp_path, n=12)
    cfg = folder_config(tmp_path)
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    x_start, t, noise, kwargs = trainer.batch(3)
    files = index_folder(tmp_path, 16).files
    idx = draw_indices(cfg, 12, 3)
    assert torch.equal(idx, draw_step(cfg, (3, 16, 16), 12, 50, 3).idx)
    assert torch.equal(x_start, torch.stack([decode_image(files[i], 16) for i in idx]))
    draws = draw_step(cfg, (3, 16, 16), 12, 50, 3)
    assert torch.equal(t, draws.t) and torch.equal(noise, draws.noise)
    dropped = draws.drop
    assert (kwargs["mask"].any(-1) == ~dropped).all()  # caption dropout for classifier-free guidance


def test_an_upsampler_gets_the_low_res_image_of_the_same_crop(tmp_path):
    write_folder(tmp_path, n=6, size=40)
    cfg = folder_config(tmp_path, overrides={"model.super_res": True, "model.in_channels": 6,
                                             "data.low_res_size": 4})
    x_start, _, _, kwargs = Trainer(cfg, tmp_path / "run", progress=False).batch(0)
    low = torch.nn.functional.avg_pool2d(x_start, 4)
    assert kwargs["low_res"].shape == (8, 3, 4, 4) and torch.allclose(kwargs["low_res"], low, atol=1e-6)


def test_folder_training_resumes_exactly(tmp_path):
    write_folder(tmp_path / "data", n=12)
    cfg = folder_config(tmp_path / "data", overrides={"train.max_steps": 6, "data.num_workers": 1,
                                                      "model.dropout": 0.1, "train.warmup_steps": 2})
    straight, split, meta = straight_and_resumed(cfg, tmp_path, stop_at=3)
    assert meta["step"] == 6
    assert_same_tensors(split, straight)


def test_skipped_samples_are_counted_in_the_training_log(tmp_path):
    write_folder(tmp_path / "data", n=8)
    (tmp_path / "data/a/0001.png").write_bytes(b"garbage")
    cfg = folder_config(tmp_path / "data", overrides={"train.max_steps": 2, "train.log_every": 2})
    with pytest.warns(UserWarning, match="unreadable or corrupt images"):
        Trainer(cfg, tmp_path / "run", progress=False).run()
    rows = [json.loads(line) for line in (tmp_path / "run/log.jsonl").read_text().splitlines()]
    assert rows[-1]["data_skipped"] == {"corrupt": 1}


def test_a_caption_over_the_context_is_truncated_with_one_warning(tmp_path):
    write_folder(tmp_path / "data", n=6)
    cfg = folder_config(tmp_path / "data", overrides={"model.text_ctx": 3, "train.max_steps": 3,
                                                      "train.log_every": 3})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Trainer(cfg, tmp_path / "run", progress=False).run()
    truncated = [w for w in caught if "captions longer than the text context" in str(w.message)]
    assert len(truncated) == 1
    row = json.loads((tmp_path / "run/log.jsonl").read_text().splitlines()[-1])
    assert row["data_skipped"]["truncated"] >= 8  # most captions have more than 3 words


def test_config_errors_name_the_missing_path_and_the_wrong_task():
    with pytest.raises(ValueError, match="data.dataset 'folder' needs data.path: the folder with metadata.jsonl"):
        tiny_text_config({"data.dataset": "folder"})
    with pytest.raises(ValueError, match=r"needs data.path: the shards, e.g. 'shards/\{0000..0099\}.tar'"):
        tiny_text_config({"data.dataset": "webdataset"})
    with pytest.raises(ValueError, match="data.dataset = 'nope' is not valid; choose one of: .*folder, webdataset"):
        tiny_text_config({"data.dataset": "nope"})
    with pytest.raises(ValueError, match="data.num_workers must be >= 0, got -1"):
        tiny_text_config({"data.dataset": "folder", "data.path": "x", "data.num_workers": -1})


# -- WebDataset shards ----------------------------------------------------------------------------------------
def test_brace_expansion_and_shard_assignment_never_share_a_shard():
    urls = expand_shards("s/{0000..0009}.tar::http://host/x-{0..1}.tar")
    assert urls[:2] == ["s/0000.tar", "s/0001.tar"] and len(urls) == 12 and urls[-1] == "http://host/x-1.tar"
    seen = [u for rank in range(2) for lane in assign_shards(urls, 0, rank, 2, 3) for u in lane]
    assert sorted(seen) == sorted(urls)
    with pytest.raises(ValueError, match="names no shards"):
        expand_shards(" ")


def test_shard_batches_hold_every_sample_once_per_epoch(tmp_path):
    spec = write_shards(tmp_path / "shards", shards=2, per_shard=4)
    cfg = folder_config(spec, "webdataset", {"data.shuffle_buffer": 3})
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    seen = torch.cat([trainer.batch(step)[0] for step in range(4)])  # 32 samples = 4 epochs of 8
    all_images = torch.stack([decode_image(png_bytes(picture(i, 24)), 16) for i in range(8)])
    match = (seen[:, None] - all_images[None]).abs().flatten(2).amax(-1) < 1e-6  # [32, 8]
    assert (match.sum(1) == 1).all()  # every sample is one of the images
    first_epoch = match[:5].float().argmax(1).tolist()  # (the shuffle buffer holds 3 back)
    assert len(set(first_epoch)) == 5


def test_webdataset_training_resumes_exactly_with_two_workers(tmp_path):
    spec = write_shards(tmp_path / "shards", shards=4, per_shard=5, bad={3: "corrupt", 7: "nocaption"})
    cfg = folder_config(spec, "webdataset", {"train.max_steps": 6, "data.num_workers": 2, "model.dropout": 0.1})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        straight, split, meta = straight_and_resumed(cfg, tmp_path, stop_at=3)
    assert meta["step"] == 6 and meta["data_state"]["lanes"] == 2
    assert_same_tensors(split, straight)
    last = [json.loads((tmp_path / run / "log.jsonl").read_text().splitlines()[-1]) for run in ("straight", "split")]
    # 48 samples read from 4 x 5: each bad sample is met once per epoch; the counts continue over the resume
    assert last[0]["data_skipped"] == last[1]["data_skipped"] == meta["data_state"]["skipped"]
    assert set(last[0]["data_skipped"]) == {"corrupt", "missing_caption"}


def test_a_webdataset_run_cannot_jump_ahead_without_its_checkpoint(tmp_path):
    spec = write_shards(tmp_path / "shards", shards=1, per_shard=4)
    trainer = Trainer(folder_config(spec, "webdataset"), tmp_path / "run", progress=False)
    with pytest.raises(ValueError, match="read in order: step 5 can only be reached by resuming"):
        trainer.batch(5)


def test_a_shard_that_does_not_resolve_is_an_error_naming_it(tmp_path):
    for spec in (str(tmp_path / "missing-{0..1}.tar"), "http://127.0.0.1:9/shard-0.tar"):
        trainer = Trainer(folder_config(spec, "webdataset"), tmp_path / "run", progress=False)
        with pytest.raises(ShardError, match="cannot read WebDataset shard .*(missing-|shard-0)"):
            trainer.batch(0)
        (tmp_path / "run/config.json").unlink()


def test_fewer_shards_than_processes_is_an_error(tmp_path, monkeypatch):
    spec = write_shards(tmp_path / "shards", shards=1, per_shard=2)
    from glide_minimal.imagetext import StreamingData
    with pytest.raises(ValueError, match="has 1 shards for 2 processes"):
        StreamingData(folder_config(spec, "webdataset"), 0, 2, torch.device("cpu"))


# -- two processes --------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["folder", "webdataset"])
def test_two_gloo_processes_resume_exactly(tmp_path, dataset):
    from test_parallel import torchrun

    path = write_folder(tmp_path / "data", n=12) if dataset == "folder" else write_shards(tmp_path / "shards")
    overrides = {**TINY_TEXT, "data.dataset": dataset, "data.path": str(path), "data.num_workers": 1,
                 "train.max_steps": 4, "train.ckpt_every": 2, "model.dropout": 0.1}
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({"inherit": "tutorial-ddpm", **nested(overrides)}, sort_keys=False))
    load_config(str(config))  # valid
    torchrun(config, tmp_path / "straight", cwd=tmp_path)
    torchrun(config, tmp_path / "split", "--max-steps", "2", cwd=tmp_path)
    torchrun(config, tmp_path / "split", "--resume", cwd=tmp_path)
    straight, _ = load_tensors(tmp_path / "straight" / CHECKPOINT)
    split, meta = load_tensors(tmp_path / "split" / CHECKPOINT)
    assert meta["step"] == 4
    if dataset == "webdataset":
        assert len(meta["data_state"]["read"]) == 2  # each rank's lanes
    assert_same_tensors(split, straight)


# -- the loader benchmark -------------------------------------------------------------------------------------
def test_bench_loader_times_each_worker_count_and_refuses_in_memory_data(tmp_path):
    from glide_minimal.bench import bench_loader

    write_folder(tmp_path / "data", n=12)
    overrides = {**TINY_TEXT, "data.dataset": "folder", "data.path": str(tmp_path / "data"),
                 "model.tokenizer": "bpe", "model.text_vocab_size": 300}
    rates = bench_loader("tutorial-ddpm", steps=2, workers=(0, 1), overrides=overrides)
    assert set(rates) == {0, 1} and all(r > 0 for r in rates.values())
    with pytest.raises(ValueError, match="bench loader needs a folder or webdataset config"):
        bench_loader("tutorial-text", steps=1, workers=(0,))


def test_shards_served_over_http_read_like_local_ones(tmp_path):
    import functools
    import http.server
    import threading

    spec = write_shards(tmp_path / "shards", shards=2, per_shard=4)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "shards"))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{{0000..0001}}.tar"
        local = Trainer(folder_config(spec, "webdataset"), tmp_path / "local", progress=False)
        remote = Trainer(folder_config(url, "webdataset"), tmp_path / "remote", progress=False)
        for step in range(3):
            assert torch.equal(local.batch(step)[0], remote.batch(step)[0])
    finally:
        server.shutdown()

"""The released models' tokenizers (models/bpe.py): GLIDE's byte-level BPE and CLIP's BPE.

The real vocabulary files come with the released checkpoints, so these tests write small ones of
their own. Where the official ids of a caption are known (tests/data/glide_text2im_tiny/tokenizers.json,
made with the official tokenizers), the test vocabulary gives each of the caption's tokens its official
id, and the test checks that our splitting, byte mapping, merging, special tokens and padding reproduce
the official ids, padding and mask exactly.
"""
import gzip
import json
from pathlib import Path

import pytest

from glide_minimal.models import build_model, get_tokenizer
from glide_minimal.models.bpe import BPE, CLIPBPE, VOCAB_SIZES, GlideBPE, byte_to_unicode, load_bpe
from glide_minimal.models.text import tokenizer_vocab_size

FIXTURE = json.loads((Path(__file__).parent / "data" / "glide_text2im_tiny" / "tokenizers.json").read_text())


def chars(text: str) -> str:
    """Text as the byte-level BPE sees it: each UTF-8 byte as its printable stand-in ("Ġ" for a space)."""
    table = byte_to_unicode()
    return "".join(table[b] for b in text.encode("utf-8"))


def chain(symbols: list[str]) -> list[tuple[str, str]]:
    """Merges that build one token from its symbols, left to right."""
    return [("".join(symbols[:i]), symbols[i]) for i in range(1, len(symbols))]


# GPT-2 tokens (as text) of the fixture's captions with their official ids. "  " is two single-space
# tokens in the fixture (GPT-2 has no merge for two spaces), so the test vocabulary has none either.
GLIDE_TOKENS = {
    "an": 272, " oil": 3056, " painting": 12036, " of": 286, " a": 257, " cor": 1162, "gi": 12397, "a": 64,
    " large": 1588, " red": 2266, " circle": 9197, " in": 287, " the": 262, " top": 1353, " left": 1364,
    " photo": 4590, " cat": 3797, "!!": 3228, " ": 220, " with": 351, " spaces": 9029, " end": 886,
}


def write_glide_vocab(folder: Path, gz: bool = False) -> Path:
    """encoder.json + vocab.bpe: GLIDE_TOKENS at their official ids, every byte and every intermediate merge
    at free ids, "<|endoftext|>" at 50256 as released."""
    encoder = {chars(t): i for t, i in GLIDE_TOKENS.items()}
    encoder["<|endoftext|>"] = 50256
    merges = []
    for token in GLIDE_TOKENS:
        for pair in chain(list(chars(token))):
            if pair not in merges:
                merges.append(pair)
    free = (i for i in range(50256) if i not in encoder.values())
    for symbol in [*byte_to_unicode().values(), *("".join(p) for p in merges)]:
        if symbol not in encoder:
            encoder[symbol] = next(free)
    files = {"encoder.json": json.dumps(encoder),
             "vocab.bpe": "#version: 0.2\n" + "\n".join(" ".join(p) for p in merges) + "\n"}
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(text.encode("utf-8")))
        else:
            (folder / name).write_text(text, encoding="utf-8")
    return folder


# CLIP tokens of the fixture's captions (a word's last symbol ends in "</w>") with their official ids.
# In CLIP's layout a merge's token has id 512 + its rank, so these fix the ranks of their last merges.
# "spaces" comes before "painting" so that its (s, p) merge outranks painting's (p, a).
CLIP_TOKENS = {
    "an": 550, "oil": 2870, "spaces": 9006, "painting": 3086, "of": 539, "corgi": 31320, "large": 3638,
    "red": 736, "circle": 7117, "in": 530, "the": 518, "top": 1253, "left": 1823, "photo": 1125, "cat": 2368,
    "!!": 748, "with": 593, "end": 806,
}


def write_clip_vocab(folder: Path) -> Path:
    """bpe_simple_vocab_16e6.txt.gz whose merges put CLIP_TOKENS at their official ids; intermediate merges
    go to free ranks, and never-matching filler merges (private-use characters) hold the other ranks."""
    table = byte_to_unicode()
    ranks: dict[int, tuple[str, str]] = {}
    intermediate = []
    for word, token_id in CLIP_TOKENS.items():
        symbols = list(chars(word))
        symbols[-1] += "</w>"
        *steps, last = chain(symbols)
        ranks[token_id - 512] = last
        intermediate += [p for p in steps if p not in intermediate]
    free = (r for r in range(10**6) if r not in ranks)
    for pair in intermediate:
        ranks[next(free)] = pair
    # As many merges as CLIP reads from the released file, so the start and end tokens get their ids too.
    lines = [" ".join(ranks[r]) if r in ranks else f"{chr(0xF0000 + r)} {chr(0x100000 + r)}"
             for r in range(CLIPBPE.MAX_MERGES)]
    assert len(set(lines)) == len(lines) and "a</w>" in [c + "</w>" for c in table.values()]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bpe_simple_vocab_16e6.txt.gz").write_bytes(
        gzip.compress(("header\n" + "\n".join(lines) + "\n").encode()))
    return folder


def fixture_cases(name: str, tokenizer) -> list[dict]:
    """The fixture's cases whose every token the test vocabulary has (the unicode one needs the real file)."""
    return [c for c in FIXTURE[name]["cases"] if "é" not in c["text"]]


def test_merges_join_the_best_ranked_pair_everywhere_first():
    bpe = BPE([("l", "o"), ("lo", "w"), ("o", "w")])
    assert bpe(tuple("low")) == ["low"]  # (l, o) outranks (o, w)
    assert bpe(tuple("lowlow")) == ["low", "low"]  # every occurrence, left to right
    assert BPE([("o", "w"), ("l", "o"), ("lo", "w")])(tuple("low")) == ["l", "ow"]  # other ranks, other tokens
    assert bpe(tuple("xyz")) == ["x", "y", "z"]  # no merge applies: single symbols


def test_byte_table_covers_every_byte_with_a_printable_character():
    table = byte_to_unicode()
    assert sorted(table) == list(range(256)) and len(set(table.values())) == 256
    assert all(c.isprintable() and not c.isspace() for c in table.values())
    assert table[ord("a")] == "a" and table[ord(" ")] == "Ġ"  # GPT-2's visible space


def test_glide_bpe_reproduces_the_official_ids_padding_and_mask(tmp_path):
    tok = load_bpe("glide-bpe", 128, write_glide_vocab(tmp_path))
    cases = fixture_cases("glide_gpt2_bpe", tok)
    assert len(cases) == 5
    for case in cases:
        assert tok.encode(case["text"]) == case["ids"], case["text"]
        tokens, mask = tok.padded_tokens_and_mask(case["text"])
        assert tokens[0].tolist() == case["padded"] and mask[0].tolist() == case["mask"], case["text"]
    assert len(tok) == FIXTURE["glide_gpt2_bpe"]["n_vocab"] == VOCAB_SIZES["glide-bpe"]
    assert tok.end_token == FIXTURE["glide_gpt2_bpe"]["end_token"]


def test_glide_bpe_lower_cases_and_decodes_back(tmp_path):
    tok = load_bpe("glide-bpe", 128, write_glide_vocab(tmp_path))
    assert tok.encode("A Large RED Circle") == tok.encode("a large red circle")
    assert tok.decode(tok.encode("a photo of a cat!!  with   spaces")) == "a photo of a cat!!  with   spaces"


def test_glide_bpe_splits_unicode_into_bytes():
    # "ï" is two UTF-8 bytes, each its own printable stand-in: byte-level BPE has no unknown characters
    assert GlideBPE.split("naïve café — unicode") == ["naïve", " café", " —", " unicode"]
    assert chars("ï") == "Ã¯"


def test_glide_bpe_reads_gzipped_vocabulary_files(tmp_path):
    tok = load_bpe("glide-bpe", 128, write_glide_vocab(tmp_path, gz=True))
    assert tok.encode("a large red circle") == [64, 1588, 2266, 9197]


def test_glide_bpe_cuts_a_long_caption_with_a_warning(tmp_path):
    tok = load_bpe("glide-bpe", 4, write_glide_vocab(tmp_path))
    with pytest.warns(UserWarning, match="cut to the context of 4"):
        tokens, mask = tok.padded_tokens_and_mask("a large red circle in the top left")
    assert tokens[0].tolist() == [64, 1588, 2266, 9197] and mask.all()


def test_clip_bpe_reproduces_the_official_ids_padding_and_length(tmp_path):
    tok = load_bpe("clip-bpe", 77, write_clip_vocab(tmp_path))
    cases = fixture_cases("clip_bpe", tok)
    assert len(cases) == 5
    for case in cases:
        assert tok.encode(case["text"]) == case["ids"], case["text"]
        with pytest.warns(UserWarning) if len(case["ids"]) > 75 else _no_warning():
            tokens, mask = tok.padded_tokens_and_mask(case["text"])
        assert tokens[0].tolist() == case["padded"], case["text"]
        assert mask[0].tolist() == [True] * case["len"] + [False] * (77 - case["len"])  # start .. end token


def test_clip_bpe_vocabulary_layout(tmp_path):
    """Bytes, bytes + "</w>", one token per merge, then start and end: single letters need no merge file."""
    tok = load_bpe("clip-bpe", 77, write_clip_vocab(tmp_path))
    assert tok.encoder["!"] == 0 and tok.encoder["a</w>"] == 256 + 64 == 320
    assert (tok.start_token, tok.end_token, len(tok)) == (49406, 49407, VOCAB_SIZES["clip-bpe"])
    assert tok.decode(tok.encode("A photo of a CAT!!")) == "a photo of a cat !!"


def test_clip_bpe_cleans_html_and_whitespace():
    assert CLIPBPE.split("  A &amp; B\n\tc  ") == ["a", "&", "b", "c"]


def test_missing_vocabulary_file_error_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "encoder.json")):
        load_bpe("glide-bpe", 128, tmp_path)
    with pytest.raises(FileNotFoundError, match="bpe_simple_vocab_16e6.txt"):
        get_tokenizer("clip-bpe", 77, tmp_path)


def test_missing_vocabulary_folder_from_the_environment_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("GLIDE_MINIMAL_VOCAB", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="nowhere"):
        get_tokenizer("glide-bpe", 128)


def test_unknown_tokenizer_lists_the_choices():
    with pytest.raises(ValueError, match="shapesworld, shapesworld-varied, glide-bpe, clip-bpe"):
        get_tokenizer("gpt4", 8)


def test_released_vocab_sizes_need_no_files():
    assert tokenizer_vocab_size("glide-bpe") == 50257 and tokenizer_vocab_size("clip-bpe") == 49408
    model = build_model("glide-filtered-base", device="meta")  # builds without encoder.json anywhere
    assert model.text_encoder.token_embedding.weight.shape == (50257, 512)


class _no_warning:
    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("error")

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)

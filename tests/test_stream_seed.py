"""checks.stream_seed: the one seed-mixing formula behind the training batches (conditioning.step_generator),
the inpainting masks (conditioning.example_generator) and the pipelines' extra random streams
(checks.make_generator). Each expected value is worked out by hand in its comment: the three callers must keep
the seeds they had before the formula was shared, or the shipped checkpoints would no longer replay."""
from __future__ import annotations

import pytest
import torch

from glide_minimal.checks import STREAM_MULTIPLIER, make_generator, stream_seed
from glide_minimal.conditioning import example_generator, step_generator


def same_draws(a: torch.Generator, b: torch.Generator) -> bool:
    return torch.equal(torch.randn(16, generator=a), torch.randn(16, generator=b))


@pytest.mark.parametrize(("seed", "step", "expected"), [
    (0, 3, 3),                        # 0 * 1_000_003 + 3
    (7, 11, 7_000_032),               # 7 * 1_000_003 + 11 = 7_000_021 + 11
    # 2**62 * 1_000_003 = 2**62 (mod 2**63, as 1_000_003 is odd), so: 2**62 + 5 * 1_000_003 + 9
    (2**62 + 5, 9, 4_611_686_018_432_387_928),
    (2**63 + 1, 4, 1_000_007),        # 2**63 * anything = 0 (mod 2**63): 1 * 1_000_003 + 4
])
def test_the_training_step_seed_is_seed_times_1_000_003_plus_step_mod_2_63(seed, step, expected):
    assert stream_seed(seed, step, bits=63) == expected
    assert same_draws(step_generator(seed, step), torch.Generator().manual_seed(expected))


@pytest.mark.parametrize(("seed", "step", "index", "expected"), [
    (0, 0, 0, 7_919),                 # (0 * 1_000_003 + 0) * 100_003 + 7_919 + 0
    # (1 * 1_000_003 + 2) * 100_003 + 7_919 + 3 = 1_000_005 * 100_003 + 7_922 = 100_003_500_015 + 7_922
    (1, 2, 3, 100_003_507_937),
])
def test_the_mask_seed_of_an_example_keeps_its_own_multipliers_and_offset(seed, step, index, expected):
    assert stream_seed(seed, step, 7_919 + index, multipliers=(1_000_003, 100_003), bits=63) == expected
    assert same_draws(example_generator(seed, step, index), torch.Generator().manual_seed(expected))


@pytest.mark.parametrize(("seed", "stream", "expected"), [
    (5, 0, 5),                        # stream 0 is the seed itself
    (5, 2, 5_000_017),                # 5 * 1_000_003 + 2
    # (2**64 - 1) * 1_000_003 + 1 = -1_000_003 + 1 (mod 2**64) = 2**64 - 1_000_002
    (2**64 - 1, 1, 18_446_744_073_708_551_614),
])
def test_a_pipeline_stream_is_seed_times_1_000_003_plus_stream_mod_2_64(seed, stream, expected):
    if stream:
        assert stream_seed(seed, stream) == expected
    assert same_draws(make_generator(seed, torch.device("cpu"), stream), torch.Generator().manual_seed(expected))


def test_no_stream_is_the_seed_and_the_default_multiplier_is_1_000_003():
    assert stream_seed(12_345) == 12_345 and stream_seed(2**64 + 3) == 3
    assert STREAM_MULTIPLIER == 1_000_003
    assert stream_seed(2, 3, 4) == (2 * 1_000_003 + 3) * 1_000_003 + 4


def test_one_multiplier_per_stream():
    with pytest.raises(ValueError, match="one multiplier per stream: 2 streams, 1 multipliers"):
        stream_seed(0, 1, 2, multipliers=(3,))

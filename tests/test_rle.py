import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers.core import rle
from helpers.studies import rle_benchmark


def grid(rows: list[str]) -> np.ndarray:
    """Mask from strings of '0'/'1' (one string per image row)."""
    return np.array([[int(c) for c in row] for row in rows], dtype=np.uint8)


# (name, mask, expected RLE)
MASK_CASES = [
    ("empty", grid(["000", "000"]), ""),
    ("full", grid(["111", "111"]), "1 6"),
    ("first pixel only", grid(["100", "000"]), "1 1"),
    ("last pixel only", grid(["000", "001"]), "6 1"),
    ("last column", grid(["001", "001"]), "5 2"),
    ("column-major order", grid(["010", "110"]), "2 3"),
    ("two runs", grid(["100", "001"]), "1 1 6 1"),
    ("1xN row", grid(["01101"]), "2 2 5 1"),
    ("Nx1 column", grid(["0", "1", "1", "0", "1"]), "2 2 5 1"),
    ("1x1 set", grid(["1"]), "1 1"),
    ("1x1 empty", grid(["0"]), ""),
    ("checkerboard", grid(["10", "01"]), "1 1 4 1"),
]


@pytest.mark.parametrize("name, mask, expected", MASK_CASES, ids=[c[0] for c in MASK_CASES])
def test_encode_known_strings(name, mask, expected):
    assert rle.encode(mask) == expected
    assert rle.encode(mask.astype(bool)) == expected


@pytest.mark.parametrize("name, mask, expected", MASK_CASES, ids=[c[0] for c in MASK_CASES])
def test_round_trips_both_ways(name, mask, expected):
    decoded = rle.decode(expected, mask.shape)
    assert decoded.dtype == np.uint8
    assert decoded.shape == mask.shape
    np.testing.assert_array_equal(decoded, mask)
    assert rle.encode(rle.decode(expected, mask.shape)) == expected
    np.testing.assert_array_equal(rle.decode(rle.encode(mask), mask.shape), mask)


def test_round_trip_on_kaggle_sized_masks():
    masks = rle_benchmark.realistic_masks(5, (256, 1600), seed=3)
    for mask in masks:
        encoded = rle.encode(mask)
        np.testing.assert_array_equal(rle.decode(encoded, mask.shape), mask)
        assert encoded == rle_benchmark.baseline_mask2rle(mask)
        np.testing.assert_array_equal(rle_benchmark.baseline_rle2mask(encoded, mask.shape), mask)


def test_touching_runs_decode_to_the_union():
    np.testing.assert_array_equal(rle.decode("1 2 3 1", (2, 2)), grid(["11", "10"]))


def test_whitespace_and_missing_values_mean_empty():
    assert rle.decode("  ", (2, 2)).sum() == 0
    assert rle.decode(None, (2, 2)).sum() == 0
    assert rle.decode(float("nan"), (2, 2)).sum() == 0


# (name, RLE, shape, words the message must contain)
INVALID_CASES = [
    ("odd token count", "1 2 3", (2, 3), "odd number of tokens"),
    ("non-integer token", "1 2 x 1", (2, 3), "token 3 is not an integer: 'x'"),
    ("float token", "1.5 2", (2, 3), "token 1 is not an integer"),
    ("start zero", "0 2", (2, 3), "start 0 < 1"),
    ("negative start", "-1 2", (2, 3), "start -1 < 1"),
    ("zero length", "2 0", (2, 3), "length 0 < 1"),
    ("negative length", "2 -1", (2, 3), "length -1 < 1"),
    ("decreasing starts", "4 1 1 1", (2, 3), "is not after the previous start"),
    ("repeated start", "2 1 2 1", (2, 3), "is not after the previous start"),
    ("overlapping runs", "1 3 2 2", (2, 3), "overlaps the previous run"),
    ("past the end", "5 3", (2, 3), "past the last pixel 6"),
    ("start past the end", "7 1", (2, 3), "past the last pixel 6"),
    ("length longer than the image", "1 7", (2, 3), "length 7 is longer than the 6 pixels"),
    ("huge start", f"{2**62} 1", (2, 3), "start 4611686018427387904 is past the last pixel 6"),
    ("huge length", f"1 {2**62}", (2, 3), "length 4611686018427387904 is longer than the 6 pixels"),
    ("token beyond int64", f"1 {2**63}", (2, 3), "token 2 is far too large for any image: '9223372036854775808'"),
    ("negative token beyond int64", f"{-2**64} 1", (2, 3), "token 1 is far too large"),
]


@pytest.mark.parametrize("name, text, shape, message", INVALID_CASES, ids=[c[0] for c in INVALID_CASES])
def test_invalid_strings_raise_with_the_reason(name, text, shape, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        rle.decode(text, shape)
    assert message in rle.problem(text, shape)


OVERFLOW_STRINGS = [
    # start + length past int64 once added: decode used to write far outside its buffer
    f"1 {2**62} {2**62 + 1} {2**62} {2**63 - 1} {2**62} {2**63 - 1} {2**62}",
    f"{2**63 - 1} {2**63 - 1}",
    f"1 1 {2**63 - 1} 2",
]


@pytest.mark.parametrize("text", OVERFLOW_STRINGS)
def test_overflowing_runs_raise_instead_of_crashing(text):
    """In a child process: before the fix these killed the interpreter (SIGSEGV)."""
    code = (
        "from helpers.core import rle\n"
        f"try:\n    rle.decode({text!r}, (10, 10))\nexcept ValueError as err:\n    print('ValueError', err)\n"
        f"print('problem', rle.problem({text!r}, (10, 10)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, f"child died with {done.returncode}: {done.stderr[-500:]}"
    assert done.stdout.startswith("ValueError run ") and "\nproblem run " in done.stdout


def test_problem_is_none_for_valid_strings():
    assert rle.problem("1 1 6 1", (2, 3)) is None


@pytest.mark.parametrize(
    "mask, message",
    [
        (np.zeros((2, 2, 1), np.uint8), "must be 2-D"),
        (np.array([[0, 2]], np.uint8), "only 0 and 1"),
        (np.array([[0, -1]], np.int8), "only 0 and 1"),
        (np.array([[0.0, 0.5]]), "only 0 and 1"),
    ],
)
def test_encode_rejects_non_binary_masks(mask, message):
    with pytest.raises(ValueError, match=message):
        rle.encode(mask)


@pytest.mark.parametrize("shape", [(0, 3), (3, 0), (2,), "ab", None])
def test_bad_shapes(shape):
    with pytest.raises(ValueError, match="shape"):
        rle.decode("1 1", shape)


@pytest.mark.parametrize(
    "text, same_as",
    [("1  2", "1 2"), ("1 2\n5 1", "1 2 5 1"), (" 1 2 ", "1 2"), ("+1 2", "1 2"), ("001 02", "1 2")],
)
def test_strings_outside_the_fast_parse_decode_like_their_plain_form(text, same_as):
    np.testing.assert_array_equal(rle.decode(text, (4, 4)), rle.decode(same_as, (4, 4)))


def test_masks_with_more_runs_than_the_prepared_pattern_round_trip():
    mask = np.zeros((100, 100), np.uint8)
    mask[::2] = 1  # 5,000 runs
    np.testing.assert_array_equal(rle.decode(rle.encode(mask), mask.shape), mask)


@pytest.mark.parametrize("mix", list(rle_benchmark.MIXES))
def test_both_benchmark_mixes_agree_with_the_baseline(mix):
    masks = rle_benchmark.benchmark_masks(mix, 4, (64, 400), seed=1)
    assert len(masks) == 4 and all(m.shape == (64, 400) and m.any() for m in masks)
    for mask in masks:
        encoded = rle.encode(mask)
        assert encoded == rle_benchmark.baseline_mask2rle(mask)
        np.testing.assert_array_equal(rle.decode(encoded, mask.shape), rle_benchmark.baseline_rle2mask(encoded, mask.shape))
    with pytest.raises(ValueError, match=r"mix must be one of \['small defects', 'large areas'\]"):
        rle_benchmark.benchmark_masks("huge", 1)


def test_large_area_masks_have_long_runs_and_fit_the_size():
    for mask in rle_benchmark.large_area_masks(3, (256, 1600), seed=0):
        lengths = rle.runs(mask)[:, 1]
        assert np.median(lengths) >= 20 and lengths.max() <= 256  # column runs of rectangles 20..80 high (or stacked)
        assert mask.any(axis=0).sum() <= 5 * 300

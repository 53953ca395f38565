import numpy as np
import pytest

from helpers.core import checks

# (call, expected value)
GOOD = [
    (lambda: checks.positive_int("epochs", 3), 3),
    (lambda: checks.positive_int("epochs", np.int64(2)), 2),
    (lambda: checks.seed("seed", 0), 0),
    (lambda: checks.integer("quality", 100, 1, 100), 100),
    (lambda: checks.number("lr", "1e-3", low=0, low_open=True), 1e-3),
    (lambda: checks.fraction("val_fraction", 0), 0.0),
    (lambda: checks.fraction("share", 1, zero=False, one=True), 1.0),
    (lambda: checks.choice("mode", "max", ("max", "min")), "max"),
    (lambda: checks.choices("tasks", ("min", "max"), ("max", "min")), ["min", "max"]),
    (lambda: checks.choices("tasks", [], ("max", "min")), []),
    (lambda: checks.size("image_size", [64, 128], 32), (64, 128)),
]

# (call, words of the message)
BAD = [
    (lambda: checks.positive_int("epochs", 0), "epochs must be an integer >= 1, got 0"),
    (lambda: checks.positive_int("epochs", True), "epochs must be an integer >= 1, got True"),
    (lambda: checks.positive_int("epochs", 2.0), "epochs must be an integer >= 1, got 2.0"),
    (lambda: checks.seed("seed", -1), "seed must be an integer >= 0, got -1"),
    (lambda: checks.integer("quality", 101, 1, 100), "quality must be an integer in 1..100, got 101"),
    (lambda: checks.number("lr", float("nan")), "lr must be a finite number, got nan"),
    (lambda: checks.number("lr", 0, low=0, low_open=True), "lr must be a finite number > 0, got 0"),
    (lambda: checks.fraction("val_fraction", 1), r"val_fraction must be in \[0, 1\), got 1"),
    (lambda: checks.fraction("share", 0, zero=False, one=True), r"share must be in \(0, 1\], got 0"),
    (lambda: checks.choice("mode", "mean", ("max", "min")), r"mode must be one of \['max', 'min'\], got 'mean'"),
    (lambda: checks.choice("mode", ["max"], {"max", "min"}), "mode must be one of"),
    (lambda: checks.choices("tasks", ["max", "mean"], ("max", "min")), r"tasks must be a list of \['max', 'min'\], got \['max', 'mean'\]"),
    (lambda: checks.choices("tasks", "max", ("max", "min")), r"tasks must be a list of \['max', 'min'\], got 'max'"),
    (lambda: checks.choices("tasks", [["max"]], {"max", "min"}), "tasks must be a list of"),
    (lambda: checks.choices("tasks", ["max", "max"], ("max", "min")), "tasks names 'max' twice"),
    (lambda: checks.size("image_size", [64], 32), r"image_size must be \(height, width\), two integers >= 32"),
    (lambda: checks.size("image_size", [16, 64], 32), r"image_size must be \(height, width\), two integers >= 32, got \[16, 64\]"),
]


@pytest.mark.parametrize("call, expected", GOOD)
def test_good_values_come_back_clean(call, expected):
    value = call()
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize("call, message", BAD)
def test_bad_values_name_the_argument_and_the_rule(call, message):
    with pytest.raises(ValueError, match=message):
        call()

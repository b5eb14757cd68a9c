"""Budget arithmetic (Chapter 4): density and sparsity, checks, parameter counts and bytes per form."""
from __future__ import annotations

import numpy as np
import pytest

from recsize import budget
from recsize.budget import (buckets_bytes, check_budget, check_sizes, compact_bytes, dense_bytes, density,
                            density_from_sparsity, masked_bytes, memory_report, num_parameters, round_widths,
                            sparsity, storage_bytes, target_parameters)


def test_density_and_sparsity_are_complements():
    sizes = [0, 64, 32, 32]
    assert num_parameters(sizes) == 128
    assert density(sizes, 64) == 0.5
    assert sparsity(sizes, 64) == 0.5
    assert density([8, 8], 64) == 0.125 and sparsity([8, 8], 64) == 0.875


@pytest.mark.parametrize("c, kept, mean_width", [(0.8, 0.2, 25.6), (0.9, 0.1, 12.8), (0.95, 0.05, 6.4)])
def test_papers_sparsity_language(c, kept, mean_width):
    d = density_from_sparsity(c)
    assert d == pytest.approx(kept)
    assert d * 128 == pytest.approx(mean_width)  # mean width at d_max = 128, as in the CIESS paper


@pytest.mark.parametrize("bad", [0, 0.0, -0.1, 1.5, 80, float("nan"), float("inf"), "abc", None])
def test_check_budget_rejects_values_outside_unit_interval(bad):
    with pytest.raises(ValueError, match="density"):
        check_budget(bad)


def test_check_budget_message_names_value_and_fix():
    with pytest.raises(ValueError, match=r"got 1\.5.*pass 0\.015"):
        check_budget(1.5)
    with pytest.raises(ValueError, match=r"got 0\b.*1 - c"):
        check_budget(0)
    assert check_budget(1) == 1.0 and check_budget("0.05") == 0.05


@pytest.mark.parametrize("bad", [1, 1.2, -0.1, float("nan")])
def test_sparsity_outside_zero_one_raises(bad):
    with pytest.raises(ValueError, match="pruned fraction"):
        density_from_sparsity(bad)
    assert density_from_sparsity(0) == 1.0


def test_check_sizes_accepts_integers_and_integral_floats():
    out = check_sizes([0, 3, 8], 3, 8)
    assert out.dtype == np.int64 and out.tolist() == [0, 3, 8]
    assert check_sizes(np.array([1.0, 2.0]), 2, 4).tolist() == [1, 2]


@pytest.mark.parametrize("sizes, match", [
    ([1, 2], "expected 3 widths"),                # wrong length
    ([[1, 2, 3]], "expected 3 widths"),           # wrong shape
    ([1, 2, 9], r"\[0, 8\].*row 2 has 9"),        # > d_max
    ([1, -1, 2], r"row 1 has -1"),                # negative
    ([1, 2.5, 2], r"integer widths, row 1"),      # not an integer
    ([True, False, True], "integer widths"),      # booleans are not widths
    (["a", "b", "c"], "integer widths"),
])
def test_check_sizes_rejects_bad_sizes(sizes, match):
    with pytest.raises(ValueError, match=match):
        check_sizes(sizes, 3, 8)


def test_check_sizes_min_size():
    with pytest.raises(ValueError, match=r"\[1, 8\].*row 0 has 0"):
        check_sizes([0, 1, 2], 3, 8, min_size=1)


def test_target_parameters_rounds_once_on_the_total():
    assert target_parameters(0.1, 943, 64) == 6035            # 6035.2
    assert target_parameters(0.5, 1, 3) == 2                  # 1.5: halves round up
    assert target_parameters(0.2, 1000, 64) == 12800          # no float drift
    assert target_parameters(1, 7, 5) == 35
    with pytest.raises(ValueError):
        target_parameters(0, 10, 10)


def test_bytes_of_every_storage_form():
    sizes = np.array([1, 5, 0, 8])
    n, d_max = 4, 8
    assert dense_bytes(n, d_max) == 4 * 8 * 4
    assert masked_bytes(n, d_max) == 4 * 8 * 4 + 4 * 8          # the mask saves nothing
    assert compact_bytes(sizes) == 14 * 4 + 5 * 8                # values + (n + 1) int64 offsets
    assert compact_bytes(sizes, d_max) == (14 + 8) * 4 + 5 * 8   # plus the d_max padding
    assert buckets_bytes(sizes, d_max, round_to=1) == 14 * 4 + 4 * 16
    assert buckets_bytes(sizes, d_max, round_to=4) == (4 + 8 + 0 + 8) * 4 + 4 * 16
    assert storage_bytes(sizes, d_max, round_to=4) == {
        "dense": 128, "masked": 160, "compact": 128, "buckets": 144}


def test_round_widths_pads_up_to_multiples_never_beyond_d_max():
    assert round_widths([0, 1, 4, 5, 9], 10, 4).tolist() == [0, 4, 4, 8, 10]
    assert round_widths([0, 1, 4], 10, 1).tolist() == [0, 1, 4]
    with pytest.raises(ValueError):
        round_widths([1], 10, 0)


def test_compact_is_close_to_the_ideal_for_a_real_table():
    rng = np.random.default_rng(0)
    sizes = rng.integers(1, 13, 2625)
    ideal = sizes.sum() * 4 + (len(sizes) + 1) * 8
    assert abs(compact_bytes(sizes, 64) - ideal) / ideal < 0.01


def test_memory_report_totals():
    report = memory_report({"user": [4, 4], "item": [0, 8, 8]}, d_max=8, round_to=1)
    assert report["user"]["parameters"] == 8 and report["item"]["rows"] == 3
    assert report["total"]["parameters"] == 24 and report["total"]["rows"] == 5
    assert report["total"]["density"] == pytest.approx(24 / 40)
    assert report["total"]["dense"] == 5 * 8 * 4
    assert report["total"]["compact"] == report["user"]["compact"] + report["item"]["compact"]


def test_format_bytes():
    assert budget.format_bytes(512) == "512 B"
    assert budget.format_bytes(1536) == "1.5 KiB"
    assert budget.format_bytes(3 * 2**20) == "3.0 MiB"

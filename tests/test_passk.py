"""pass@k: the unbiased estimator of Chen et al. (2021) against its closed form and a brute force."""

from __future__ import annotations

import itertools
import math

import pytest

from s0.passk import mean_pass_at_k, pass_at_k, pass_at_k_from_records


def _codex_numpy_form(n: int, c: int, k: int) -> float:
    """The Codex paper's reference code, written with math instead of numpy."""
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


@pytest.mark.parametrize("n", [1, 2, 5, 10, 20])
def test_matches_binomial_closed_form(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            exact = 1 - math.comb(n - c, k) / math.comb(n, k)
            assert pass_at_k(n, c, k) == pytest.approx(exact, abs=1e-12)
            assert pass_at_k(n, c, k) == pytest.approx(_codex_numpy_form(n, c, k), abs=1e-12)


def test_matches_brute_force_over_subsets():
    samples = [1, 0, 0, 1, 0, 0]  # n = 6, c = 2
    for k in range(1, 7):
        subsets = list(itertools.combinations(samples, k))
        brute = sum(any(s) for s in subsets) / len(subsets)
        assert pass_at_k(6, 2, k) == pytest.approx(brute)


def test_edge_cases_and_stability():
    assert pass_at_k(10, 0, 5) == 0.0
    assert pass_at_k(10, 10, 1) == 1.0
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)  # pass@1 is the fraction correct
    assert 0.0 < pass_at_k(1000, 1, 1) < 0.0011  # no overflow for large n
    with pytest.raises(ValueError):
        pass_at_k(5, 2, 6)  # k > n
    with pytest.raises(ValueError):
        pass_at_k(5, 6, 1)


def test_mean_and_records():
    assert mean_pass_at_k([(10, 10), (10, 0)], 1) == pytest.approx(0.5)
    records = [{"id": "a", "correct": i < 3} for i in range(10)] + [{"id": "b", "correct": False}] * 10
    out = pass_at_k_from_records(records, ks=(1, 5, 10))
    assert out["pass@1"] == pytest.approx(0.15)
    assert out["pass@10"] == pytest.approx(0.5)
    assert out["pass@5"] == pytest.approx((1 - math.comb(7, 5) / math.comb(10, 5)) / 2)

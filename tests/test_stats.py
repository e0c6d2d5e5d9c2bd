"""s0.stats against scipy on random data, and against the p-values the paper prints.

The paper-side tests read their inputs (mean, std, n, printed p) from results/reference/paper_values.csv,
so they check the transcription and the statistics together. A printed p-value is "reproduced" when the
p-values over the rounding box of the printed inputs (each mean and std +- half a unit in the last digit)
overlap the rounding interval of the printed p: the paper's own inputs were unrounded, so nothing tighter
can be asked of a test fed with rounded ones.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sp

from s0 import stats as st
from s0.report.reference import load_paper_values, paper_rows, rounding_halfwidth

RTOL = 1e-12
ALTS = ("two-sided", "greater", "less")


@pytest.fixture(scope="module")
def ref() -> pd.DataFrame:
    return load_paper_values()


def _cell(ref: pd.DataFrame, **filters) -> tuple[float, float]:
    """(value, rounding half-width) of the one row matching ``filters``."""
    rows = paper_rows(ref, **filters)
    assert len(rows) == 1, f"{len(rows)} rows for {filters}"
    return float(rows["value"].iloc[0]), rounding_halfwidth(rows["printed"].iloc[0])


def _p_range(test, *cells: tuple[float, float], **kw) -> tuple[float, float]:
    """Min and max p of ``test`` over the corners of the rounding box of its (value, half-width) inputs."""
    corners = itertools.product(*[(v - h, v + h) for v, h in cells])
    ps = [test(*c, **kw).pvalue for c in corners]
    return min(ps), max(ps)


def _overlaps(lo: float, hi: float, printed: tuple[float, float]) -> bool:
    p, h = printed
    return lo <= p + h and hi >= p - h


# ----------------------------------------------------------------------------- against scipy


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("alternative", ALTS)
def test_welch_matches_scipy(seed: int, alternative: str) -> None:
    rng = np.random.default_rng(seed)
    a = rng.normal(rng.uniform(-2, 2), rng.uniform(0.5, 3), size=rng.integers(2, 15))
    b = rng.normal(rng.uniform(-2, 2), rng.uniform(0.5, 3), size=rng.integers(2, 15))
    ours = st.welch_ttest(a, b, alternative=alternative)
    ref = sp.ttest_ind(a, b, equal_var=False, alternative=alternative)
    np.testing.assert_allclose(
        [ours.statistic, ours.pvalue, ours.df], [ref.statistic, ref.pvalue, ref.df], rtol=RTOL
    )
    np.testing.assert_allclose([ours.ci_low, ours.ci_high], ref.confidence_interval(0.95), rtol=RTOL)
    assert ours.estimate == pytest.approx(a.mean() - b.mean(), rel=RTOL)
    # From summary statistics alone, exactly as scipy's from_stats version.
    fs = sp.ttest_ind_from_stats(
        a.mean(),
        a.std(ddof=1),
        a.size,
        b.mean(),
        b.std(ddof=1),
        b.size,
        equal_var=False,
        alternative=alternative,
    )
    ours_fs = st.welch_ttest_from_stats(
        a.mean(), a.std(ddof=1), a.size, b.mean(), b.std(ddof=1), b.size, alternative=alternative
    )
    np.testing.assert_allclose([ours_fs.statistic, ours_fs.pvalue], [fs.statistic, fs.pvalue], rtol=RTOL)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("alternative", ALTS)
def test_paired_and_one_sample_match_scipy(seed: int, alternative: str) -> None:
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(2, 15))
    a = rng.normal(0, 2, n)
    b = a - rng.normal(rng.uniform(-1, 1), 1, n)
    ours, ref = st.paired_ttest(a, b, alternative=alternative), sp.ttest_rel(a, b, alternative=alternative)
    np.testing.assert_allclose(
        [ours.statistic, ours.pvalue, ours.df], [ref.statistic, ref.pvalue, ref.df], rtol=RTOL
    )
    np.testing.assert_allclose([ours.ci_low, ours.ci_high], ref.confidence_interval(0.95), rtol=RTOL)
    popmean = float(rng.uniform(-1, 1))
    ours, ref = (
        st.one_sample_ttest(a, popmean, alternative),
        sp.ttest_1samp(a, popmean, alternative=alternative),
    )
    np.testing.assert_allclose(
        [ours.statistic, ours.pvalue, ours.df], [ref.statistic, ref.pvalue, ref.df], rtol=RTOL
    )
    np.testing.assert_allclose([ours.ci_low, ours.ci_high], ref.confidence_interval(0.95), rtol=RTOL)


@pytest.mark.parametrize(("k", "n", "p"), [(0, 5, 0.5), (3, 10, 0.5), (27, 27, 0.5), (23, 27, 0.1), (7, 40, 0.3),
                                           (12, 12, 0.9), (5, 9, 0.5), (1, 1, 0.5)])  # fmt: skip
@pytest.mark.parametrize("alternative", ALTS)
def test_binomial_matches_scipy(k: int, n: int, p: float, alternative: str) -> None:
    ours, ref = st.binomial_test(k, n, p, alternative), sp.binomtest(k, n, p, alternative=alternative)
    assert ours.pvalue == pytest.approx(ref.pvalue, rel=RTOL)
    ci = ref.proportion_ci(0.95, method="exact")
    np.testing.assert_allclose([ours.ci_low, ours.ci_high], [ci.low, ci.high], rtol=1e-10, atol=1e-15)


def test_sign_test_drops_ties_and_counts_signs() -> None:
    r = st.sign_test([3.0, 1.0, 0.0, -2.0, 5.0, 0.0, 4.0], alternative="greater")
    assert (r.statistic, r.n1) == (4, 5)  # two zeros dropped, 4 of 5 above 0
    assert r.pvalue == pytest.approx(sp.binomtest(4, 5, 0.5, alternative="greater").pvalue, rel=RTOL)


def test_summary_and_deltas() -> None:
    x = pd.Series([72.6, 70.2, 72.6])  # pandas input is accepted
    s = st.summarize(x)
    assert (s.n, s.mean, s.std) == (3, pytest.approx(71.8), pytest.approx(np.std(x, ddof=1)))
    np.testing.assert_allclose(
        [s.ci_low, s.ci_high], sp.t.interval(0.95, 2, loc=s.mean, scale=sp.sem(x)), rtol=RTOL
    )
    assert s.format() == "71.8 ± 1.4 (n=3)"
    # Footnote 1: the delta is the mean of per-seed improvements, which paired baselines make differ
    # from the difference of the group means only through rounding; here exactly equal by construction.
    d = st.summarize_deltas([50.0, 60.0, 55.0], [40.0, 41.0, 39.0])
    assert d.mean == pytest.approx(15.0) and d.std == pytest.approx(np.std([10, 19, 16], ddof=1))
    np.testing.assert_array_equal(st.per_seed_deltas([1.0, 2.0], 0.5), [0.5, 1.5])
    with pytest.raises(ValueError, match="pair them"):
        st.per_seed_deltas([1.0, 2.0, 3.0], [1.0, 2.0])


def test_effect_sizes() -> None:
    assert st.cohens_d([1, 2, 3], [3, 4, 5]) == pytest.approx(-2.0)  # pooled sd 1
    a, b = [5.0, 7.0, 9.0, 3.0], [1.0, 2.0, 2.5, 8.0, 4.0]
    pooled = math.sqrt((3 * np.var(a, ddof=1) + 4 * np.var(b, ddof=1)) / 7)
    assert st.cohens_d(a, b) == pytest.approx((np.mean(a) - np.mean(b)) / pooled, rel=RTOL)
    assert st.welch_ttest(a, b).effect_size == pytest.approx(st.cohens_d(a, b), rel=RTOL)
    diff = np.subtract([4.0, 5.0, 9.0, 6.0], [1.0, 1.0, 2.0, 3.0])
    assert st.cohens_dz([4.0, 5.0, 9.0, 6.0], [1.0, 1.0, 2.0, 3.0]) == pytest.approx(
        diff.mean() / diff.std(ddof=1)
    )
    assert st.paired_ttest([4.0, 5.0, 9.0, 6.0], [1.0, 1.0, 2.0, 3.0]).effect_size == pytest.approx(
        st.cohens_dz(diff)
    )
    assert math.isnan(st.cohens_dz([2.0, 2.0, 2.0]))


def test_stars_and_formatting() -> None:
    assert [st.stars(p) for p in (0.0009, 0.001, 0.0099, 0.01, 0.049, 0.05, 0.5)] == [
        "***", "**", "**", "*", "*", "n.s.", "n.s.",
    ]  # fmt: skip
    assert [st.format_pvalue(p) for p in (0.000056, 0.076, 0.5, 0.0013, 0.5**27)] == [
        "0.000056", "0.076", "0.50", "0.0013", "7.5e-09",
    ]  # fmt: skip
    r = st.welch_ttest_from_stats(23.6, 1.7, 10, 12.7, 5.1, 10)
    assert str(r) == r.format() and "p = 0.000050 ***" in str(r) and "d = 2.87" in str(r)
    assert r.stars == "***" and r.significant
    assert "greater" in st.binomial_test(27, 27, alternative="greater").format()
    with pytest.raises(AttributeError):
        r.pvalue = 0.5  # frozen


def test_input_validation() -> None:
    with pytest.raises(ValueError, match="NaN"):
        st.summarize([1.0, float("nan"), 2.0])
    with pytest.raises(ValueError, match="at least 2"):
        st.summarize([1.0])
    with pytest.raises(ValueError, match="at least 1"):
        st.welch_ttest([], [1.0, 2.0])
    with pytest.raises(ValueError, match="alternative"):
        st.one_sample_ttest([1.0, 2.0], alternative="two_sided")
    with pytest.raises(ValueError, match="length"):
        st.paired_ttest([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(ValueError):
        st.binomial_test(5, 3)


# ----------------------------------------------------------------------------- the paper's p-values


def test_main_welch_s0_vs_lora_from_summary_stats(ref: pd.DataFrame) -> None:
    """Sec 5.1: S0 +23.6 ± 1.7 vs LoRA r24 +12.7 ± 5.1 (10 seeds each), Welch two-sided, p = 0.000056.

    From the rounded summaries we get p = 5.0e-5 (deltas) or 5.9e-5 (absolute 72.2 vs 61.5), not 5.6e-5
    exactly: the means and stds are printed to 0.1 pp, and moving them within that rounding moves p from
    4.1e-5 to 6.1e-5, which brackets the printed value.
    """
    s0_m = _cell(ref, source="Sec 5.1", metric="delta", stat="mean")
    s0_s = _cell(ref, source="Sec 5.1", metric="delta", stat="std")
    lo_m = _cell(ref, source="Table 6", metric="delta", stat="mean")
    lo_s = _cell(ref, source="Table 6", metric="delta", stat="std")
    n = int(paper_rows(ref, source="Sec 5.1", metric="n_seeds")["value"].iloc[0])
    printed = _cell(ref, source="Sec 5.1", metric="p_value")

    r = st.welch_ttest_from_stats(s0_m[0], s0_s[0], n, lo_m[0], lo_s[0], n)
    assert r.pvalue == pytest.approx(5e-5, rel=0.05) and r.stars == "***"
    assert 0.5 < r.pvalue / printed[0] < 2.0

    def welch(m1, s1, m2, s2):
        return st.welch_ttest_from_stats(m1, s1, n, m2, s2, n)

    assert _overlaps(*_p_range(welch, s0_m, s0_s, lo_m, lo_s), printed)
    # The same holds when the test is run on the absolute Table 1 scores (72.2 ± 1.7 vs 61.5 ± 5.1).
    t1 = {
        (meth, stat): _cell(
            ref, source="Table 1", experiment="main_qwen", method=meth, metric="pass@1", stat=stat
        )
        for meth in ("s0", "lora")
        for stat in ("mean", "std")
    }
    cells = (t1["s0", "mean"], t1["s0", "std"], t1["lora", "mean"], t1["lora", "std"])
    assert _overlaps(*_p_range(welch, *cells), printed)


@pytest.mark.parametrize(
    ("source", "filters", "n_filters"),
    [
        # App H / Sec 5.4: one-sample t-test on the per-seed deltas, 3 seeds (Sec 4.4), two-sided.
        ("App H", {"model": "qwen3_5_2b"}, {"source": "Sec 4.4", "model": "qwen3_5_2b"}),
        ("App H", {"model": "qwen3_5_9b"}, {"source": "Sec 4.4", "model": "qwen3_5_9b"}),
        # Sec 5.6: one-sample t-test on per-seed deltas, 8 and 10 seeds, two-sided.
        (
            "Sec 5.6",
            {"experiment": "transfer_math500"},
            {"source": "Sec 5.6", "experiment": "transfer_math500"},
        ),
        ("Sec 5.6", {"experiment": "transfer_gsm8k"}, {"source": "Sec 5.6", "experiment": "transfer_gsm8k"}),
    ],
)
def test_one_sample_ttest_reproduces_paper_pvalues(ref, source, filters, n_filters) -> None:
    mean = _cell(ref, source=source, metric="delta", stat="mean", **filters)
    std = _cell(ref, source=source, metric="delta", stat="std", **filters)
    n = int(paper_rows(ref, metric="n_seeds", **n_filters)["value"].iloc[0])
    p_source = "Sec 5.4" if source == "App H" else source
    printed = _cell(ref, source=p_source, metric="p_value", **filters)
    lo, hi = _p_range(st.one_sample_ttest_from_stats, mean, std, n=n)
    assert _overlaps(lo, hi, printed), (lo, hi, printed)


def test_app_h_0_8b_pvalue_is_not_reproduced(ref: pd.DataFrame) -> None:
    """App H / Sec 5.4: 0.8B +2.6 ± 3.7 pp, p = 0.076, with the seed count never stated.

    A one-sample t-test with the paper's usual seed counts does not give 0.076 (two-sided: n=3 -> 0.35,
    n=5 -> 0.19, n=10 -> 0.053; one-sided halves these). Only two (n, side) pairs reach 0.076 within
    rounding: n=6 one-sided (0.073) and n=9 two-sided (0.068, touching 0.0757 only at the extreme corner).
    The paper calls tests two-sided by default and lists 0.8B among neither the 3-seed nor the 10-seed runs,
    so we record the value as not reproduced rather than pick one of these.
    """
    mean = _cell(ref, source="App H", model="qwen3_5_0_8b", metric="delta", stat="mean")
    std = _cell(ref, source="App H", model="qwen3_5_0_8b", metric="delta", stat="std")
    printed = _cell(ref, source="Sec 5.4", model="qwen3_5_0_8b", metric="p_value")
    hits = {
        (n, alt)
        for n in range(2, 21)
        for alt in ("two-sided", "greater")
        if _overlaps(*_p_range(st.one_sample_ttest_from_stats, mean, std, n=n, alternative=alt), printed)
    }
    assert hits == {(6, "greater"), (9, "two-sided")}
    assert st.one_sample_ttest_from_stats(mean[0], std[0], 10).pvalue == pytest.approx(0.053, abs=0.001)


def test_sign_test_first_character_divergence(ref: pd.DataFrame) -> None:
    """Sec 6.3: all 27 flips diverge within the first 10% of the completion; sign test p < 1e-8.

    Null used: each flip is as likely to diverge inside the first 10% as after it (p0 = 1/2), one-sided.
    That gives 0.5**27 = 7.5e-9 < 1e-8; the two-sided version is 1.5e-8 and would not be < 1e-8. A null of
    uniformly placed divergence points (p0 = 0.1) would give 1e-27, also < 1e-8 but far from the bound.
    """
    k = int(paper_rows(ref, metric="n_flips_first_10pct")["value"].iloc[0])
    n = int(paper_rows(ref, metric="n_flips")["value"].iloc[0])
    bound = paper_rows(ref, source="Sec 6.3", metric="p_value").iloc[0]
    assert bound["relation"] == "<"
    one_sided = st.binomial_test(k, n, 0.5, alternative="greater")
    assert one_sided.pvalue == pytest.approx(0.5**27, rel=RTOL) and one_sided.pvalue < bound["value"]
    assert st.binomial_test(k, n, 0.5).pvalue > bound["value"]
    assert st.binomial_test(k, n, 0.1, alternative="greater").pvalue < 1e-26
    assert st.sign_test(np.full(n, 1.0), alternative="greater").pvalue == one_sided.pvalue


def test_falcon_tie_and_offset_win(ref: pd.DataFrame) -> None:
    """Table 1: FalconH1 S0 71.8 ± 1.3 vs LoRA 71.4 ± 2.4 (3 seeds) is n.s.; Sec 7.2: offset beats LoRA, p<0.001."""
    f = {
        (m, s): _cell(ref, source="Table 1", experiment="main_falcon", method=m, metric="pass@1", stat=s)[0]
        for m in ("s0", "lora")
        for s in ("mean", "std")
    }
    r = st.welch_ttest_from_stats(f["s0", "mean"], f["s0", "std"], 3, f["lora", "mean"], f["lora", "std"], 3)
    assert r.pvalue > 0.5 and r.stars == "n.s."
    t3 = {
        (m, s): _cell(ref, source="Table 3", method=m, metric="delta", stat=s)[0]
        for m in ("state_offset", "lora")
        for s in ("mean", "std")
    }
    r = st.welch_ttest_from_stats(
        t3["state_offset", "mean"], t3["state_offset", "std"], 10, t3["lora", "mean"], t3["lora", "std"], 10
    )
    assert r.pvalue < _cell(ref, source="Sec 7.2", metric="p_value")[0]


def test_welch_with_two_constant_groups_is_undefined_not_an_error():
    """scipy returns nan here; a table of tiny-model runs (all 0%) must render, not crash."""
    res = st.welch_ttest([0.0, 0.0, 0.0], [0.0, 0.0])
    assert math.isnan(res.pvalue) and math.isnan(res.statistic)
    ref = sp.ttest_ind([0.0, 0.0, 0.0], [0.0, 0.0], equal_var=False)
    assert math.isnan(ref.pvalue)


def test_degenerate_tests_are_nan_with_a_reason_never_an_error() -> None:
    """Smoke runs give every seed the same delta (issue 10): p is NaN and says why, where it used to divide by 0."""
    for res in (st.one_sample_ttest([0.0, 0.0, 0.0]), st.one_sample_ttest([2.5] * 4),
                st.paired_ttest([1.0, 2.0], [0.0, 1.0]), st.welch_ttest([0.0, 0.0], [3.0, 3.0, 3.0]),
                st.one_sample_ttest_from_stats(1.0, 0.0, 5)):  # fmt: skip
        assert math.isnan(res.pvalue) and res.reason == "zero variance", res
        assert res.format().endswith("n/a (zero variance)") and res.stars == "n/a" and not res.significant
    for res in (st.one_sample_ttest([3.0]), st.welch_ttest([1.0], [1.0, 2.0]), st.paired_ttest([1.0], [0.0]),
                st.welch_ttest_from_stats(1.0, 0.5, 1, 2.0, 0.5, 10)):  # fmt: skip
        assert math.isnan(res.pvalue) and res.reason == "n=1", res
    # equal values whose mean is off by an ulp are still constant: no astronomically small p
    x = [100 * 41 / 84 - 100 * 20 / 84] * 7
    assert st.one_sample_ttest(x).reason == "zero variance" and st.degenerate(x) == "zero variance"
    assert st.degenerate([1.0, 2.0]) == "" and st.degenerate([1.0], [1.0, 2.0]) == "n=1"
    assert st.degenerate([0.0, 0.0], [1.0, 2.0]) == "" and st.welch_ttest([0.0, 0.0], [1.0, 2.0]).reason == ""
    ok = st.one_sample_ttest([1.0, 2.0, 4.0])
    assert ok.reason == "" and ok.pvalue == pytest.approx(sp.ttest_1samp([1.0, 2.0, 4.0], 0.0).pvalue)

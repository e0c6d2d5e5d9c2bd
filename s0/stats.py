"""Seed-level statistics used by the paper: mean ± std, Welch/paired/one-sample t-tests, sign test, Cohen's d.

The paper reports mean ± sample std (ddof=1) over seeds, deltas as the mean of per-seed improvements
(footnote 1), and two-sided Welch t-tests unless stated otherwise (Sec 4.4). Everything here is plain
numpy + scipy distributions, so the functions take lists, arrays or pandas Series alike. The t and p are
computed here (not delegated to ``scipy.stats.ttest_*``) so that tests/test_stats.py can check them
against scipy independently; ``welch_ttest_from_stats`` lets us test the paper's p-values from the
published mean ± std alone.

    >>> r = welch_ttest_from_stats(23.6, 1.7, 10, 12.7, 5.1, 10)   # S0 vs LoRA deltas, Table 2
    >>> print(r)
    Welch t(11.0) = 6.41, p = 0.000050 ***; est = +10.90 [7.16, 14.64]; d = 2.87
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy import stats as _sp

ArrayLike = Sequence[float] | np.ndarray
ALTERNATIVES = ("two-sided", "greater", "less")


def _as_array(x: ArrayLike, name: str = "x", min_n: int = 2) -> np.ndarray:
    arr = np.asarray(x, dtype=float).ravel()
    # Silently dropping NaNs would change n and therefore the df; a missing seed should be loud.
    if np.isnan(arr).any():
        raise ValueError(f"{name} contains NaN; drop missing seeds explicitly")
    if arr.size < min_n:
        raise ValueError(f"{name} needs at least {min_n} values, got {arr.size}")
    return arr


def _check_alternative(alternative: str) -> None:
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {ALTERNATIVES}, got {alternative!r}")


def stars(p: float) -> str:
    """Significance stars as in the paper's Fig 1: *** p<0.001, ** p<0.01, * p<0.05, else 'n.s.'."""
    if math.isnan(p):
        return "n/a"  # an undefined test is not "not significant"
    if p < 0.001:
        return "***"
    if p < 0.01:
        return "**"
    if p < 0.05:
        return "*"
    return "n.s."


def format_pvalue(p: float) -> str:
    """Two significant digits, in plain decimals down to 1e-6 like the paper (p=0.000056), else e-notation."""
    if not math.isfinite(p):
        return "nan"
    if p >= 1e-6:
        decimals = max(2, 1 - math.floor(math.log10(p))) if p > 0 else 2
        return f"{p:.{decimals}f}"
    return f"{p:.1e}"


@dataclass(frozen=True)
class Summary:
    """Mean ± sample std (ddof=1) over seeds, with a t-based confidence interval for the mean."""

    n: int
    mean: float
    std: float
    sem: float
    ci_low: float
    ci_high: float
    confidence: float = 0.95

    def format(self, digits: int = 1, signed: bool = False) -> str:
        sign = "+" if signed else ""
        return f"{self.mean:{sign}.{digits}f} ± {self.std:.{digits}f} (n={self.n})"

    def __str__(self) -> str:
        return self.format()


@dataclass(frozen=True)
class TestResult:
    """Outcome of one hypothesis test; ``estimate`` is the mean (difference) the CI is about."""

    __test__ = False  # the name starts with "Test"; keep pytest from trying to collect it in test modules
    name: str
    statistic: float
    pvalue: float
    df: float | None
    estimate: float
    ci_low: float
    ci_high: float
    effect_size: float | None
    n1: int
    n2: int | None
    alternative: str
    confidence: float = 0.95
    reason: str = ""  # why the test is undefined ("zero variance", "n=1"; every number NaN), "" if defined

    @property
    def stars(self) -> str:
        return stars(self.pvalue)

    @property
    def significant(self) -> bool:
        return self.pvalue < 1.0 - self.confidence

    def format(self, digits: int = 2) -> str:
        if self.reason:
            return f"{self.name}: n/a ({self.reason})"
        side = "" if self.alternative == "two-sided" else f", {self.alternative}"
        if self.df is None:  # exact count tests: the statistic is a number of successes out of n1
            stat = f"{self.name} k = {self.statistic:.0f}/{self.n1}"
        else:
            stat = f"{self.name}({self.df:.1f}) = {self.statistic:.{digits}f}"
        out = f"{stat}, p = {format_pvalue(self.pvalue)} {self.stars}{side}"
        out += f"; est = {self.estimate:+.{digits}f} [{self.ci_low:.{digits}f}, {self.ci_high:.{digits}f}]"
        if self.effect_size is not None:
            out += f"; d = {self.effect_size:.{digits}f}"
        return out

    def __str__(self) -> str:
        return self.format()


def summarize(values: ArrayLike, confidence: float = 0.95) -> Summary:
    """Mean, sample std (ddof=1), standard error and t-based CI of per-seed values."""
    x = _as_array(values, "values")
    n, mean, std = x.size, float(x.mean()), float(x.std(ddof=1))
    sem = std / math.sqrt(n)
    half = _sp.t.ppf(0.5 + confidence / 2, n - 1) * sem
    return Summary(n, mean, std, sem, mean - half, mean + half, confidence)


def per_seed_deltas(treated: ArrayLike, baseline: ArrayLike | float) -> np.ndarray:
    """Per-seed improvements ``treated - baseline`` (a scalar baseline is broadcast to every seed)."""
    t = _as_array(treated, "treated", min_n=1)
    b = np.asarray(baseline, dtype=float).ravel()
    if b.size not in (1, t.size):
        raise ValueError(f"baseline has {b.size} values for {t.size} seeds; pair them by seed first")
    return t - b


def summarize_deltas(treated: ArrayLike, baseline: ArrayLike | float, confidence: float = 0.95) -> Summary:
    """Mean ± std of per-seed deltas: the paper's Δ, which can differ from the difference of rounded means."""
    return summarize(per_seed_deltas(treated, baseline), confidence)


def _t_pvalue_ci(t: float, df: float, estimate: float, se: float, alternative: str, confidence: float):
    """p-value and CI matching scipy's conventions, including one-sided CIs that are open on one end."""
    if alternative == "two-sided":
        p = 2.0 * _sp.t.sf(abs(t), df)
        q = _sp.t.ppf(0.5 + confidence / 2, df)
        return min(p, 1.0), estimate - q * se, estimate + q * se
    q = _sp.t.ppf(confidence, df)
    if alternative == "greater":
        return _sp.t.sf(t, df), estimate - q * se, math.inf
    return _sp.t.cdf(t, df), -math.inf, estimate + q * se


def cohens_d(a: ArrayLike, b: ArrayLike) -> float:
    """Cohen's d for two independent samples: mean difference over the pooled SD."""
    x, y = _as_array(a, "a"), _as_array(b, "b")
    return _cohens_d_from_stats(x.mean(), x.std(ddof=1), x.size, y.mean(), y.std(ddof=1), y.size)


def _cohens_d_from_stats(m1: float, s1: float, n1: int, m2: float, s2: float, n2: int) -> float:
    pooled = math.sqrt(((n1 - 1) * s1**2 + (n2 - 1) * s2**2) / (n1 + n2 - 2))
    return float((m1 - m2) / pooled) if pooled > 0 else math.nan


def cohens_dz(a: ArrayLike, b: ArrayLike | None = None) -> float:
    """Cohen's d_z for paired data (or for deltas when ``b`` is None): mean difference over its SD."""
    d = _as_array(a, "a") if b is None else _as_array(a, "a") - _as_array(b, "b")
    sd = d.std(ddof=1)
    return float(d.mean() / sd) if sd > 0 else math.nan


def welch_ttest_from_stats(
    mean1: float,
    std1: float,
    n1: int,
    mean2: float,
    std2: float,
    n2: int,
    alternative: str = "two-sided",
    confidence: float = 0.95,
) -> TestResult:
    """Welch's unequal-variance t-test from mean, sample std (ddof=1) and n of each group.

    The CI is for mean1 - mean2 with the Welch-Satterthwaite df; the effect size is Cohen's d (pooled SD).
    """
    _check_alternative(alternative)
    if n1 < 2 or n2 < 2:  # no spread to test against
        return _undefined("Welch t", mean1 - mean2, n1, n2, alternative, confidence, f"n={min(n1, n2)}")
    v1, v2 = std1**2 / n1, std2**2 / n2
    if v1 + v2 == 0:  # both groups constant (tiny demo models score 0 everywhere): undefined, as in scipy
        return _undefined("Welch t", mean1 - mean2, n1, n2, alternative, confidence, "zero variance")
    se = math.sqrt(v1 + v2)
    # Welch-Satterthwaite: each group's variance is weighted by its own df, so unequal spreads (1.7 vs 5.1
    # in the paper's main comparison) are not averaged away as in Student's t-test.
    df = (v1 + v2) ** 2 / (v1**2 / (n1 - 1) + v2**2 / (n2 - 1))
    diff = mean1 - mean2
    t = diff / se
    p, lo, hi = _t_pvalue_ci(t, df, diff, se, alternative, confidence)
    d = _cohens_d_from_stats(mean1, std1, n1, mean2, std2, n2)
    return TestResult("Welch t", t, p, df, diff, lo, hi, d, n1, n2, alternative, confidence)


def _undefined(name: str, estimate: float, n1: int, n2: int | None, alternative: str, confidence: float,
               reason: str) -> TestResult:  # fmt: skip
    nan = math.nan
    return TestResult(name, nan, nan, nan, estimate, nan, nan, nan, n1, n2, alternative, confidence, reason)


def degenerate(*samples: ArrayLike) -> str:
    """Why a t-test on `samples` is undefined: "n=1" (a sample of fewer than 2), "zero variance" (every sample
    constant), or "" when it is defined. Tables print "n/a (<reason>)" instead of a p-value."""
    arrays = [_as_array(x, min_n=1) for x in samples]
    small = min(a.size for a in arrays)
    if small < 2:
        return f"n={small}"
    return "zero variance" if all(_mean_std_n(a)[1] == 0 for a in arrays) else ""


def _mean_std_n(x: np.ndarray) -> tuple[float, float, int]:
    if x.size < 2:
        return float(x.mean()), math.nan, x.size
    # Equal values can average to a mean off by an ulp, and then a "std" of 1e-15 makes t astronomically large.
    if np.ptp(x) <= 1e-9 * max(1.0, float(np.abs(x).max())):
        return float(x.mean()), 0.0, x.size
    return float(x.mean()), float(x.std(ddof=1)), x.size


def welch_ttest(
    a: ArrayLike, b: ArrayLike, alternative: str = "two-sided", confidence: float = 0.95
) -> TestResult:
    """Welch's t-test of mean(a) vs mean(b) for independent per-seed values (the paper's default test).

    Undefined (NaN, with `reason`) when a group has one value or both are constant."""
    x, y = _as_array(a, "a", min_n=1), _as_array(b, "b", min_n=1)
    return welch_ttest_from_stats(*_mean_std_n(x), *_mean_std_n(y), alternative, confidence)


def one_sample_ttest_from_stats(
    mean: float,
    std: float,
    n: int,
    popmean: float = 0.0,
    alternative: str = "two-sided",
    confidence: float = 0.95,
) -> TestResult:
    """One-sample t-test from a published mean ± std (ddof=1) over n seeds; effect size is (mean-popmean)/std.

    Undefined (NaN, with `reason`) for n < 2 or std = 0, where t would divide by zero."""
    _check_alternative(alternative)
    if n < 2:
        return _undefined("t", mean, n, None, alternative, confidence, f"n={n}")
    if std == 0:
        return _undefined("t", mean, n, None, alternative, confidence, "zero variance")
    se = std / math.sqrt(n)
    t = (mean - popmean) / se
    p, lo, hi = _t_pvalue_ci(t, n - 1, mean, se, alternative, confidence)
    d = (mean - popmean) / std if std > 0 else math.nan
    return TestResult("t", t, p, float(n - 1), mean, lo, hi, d, n, None, alternative, confidence)


def one_sample_ttest(
    x: ArrayLike, popmean: float = 0.0, alternative: str = "two-sided", confidence: float = 0.95
) -> TestResult:
    """One-sample t-test of mean(x) against ``popmean``; on per-seed deltas this tests 'Δ = 0' (d is d_z)."""
    return one_sample_ttest_from_stats(*_mean_std_n(_as_array(x, min_n=1)), popmean, alternative, confidence)


def paired_ttest(
    a: ArrayLike, b: ArrayLike, alternative: str = "two-sided", confidence: float = 0.95
) -> TestResult:
    """Paired t-test on a[i] - b[i] (same seed for both methods, as in the S0 vs state-offset rerun)."""
    x, y = _as_array(a, "a", min_n=1), _as_array(b, "b", min_n=1)
    if x.size != y.size:
        raise ValueError(f"paired samples differ in length: {x.size} vs {y.size}")
    return replace(one_sample_ttest(x - y, 0.0, alternative, confidence), name="paired t", n2=y.size)


def binomial_test(
    k: int, n: int, p: float = 0.5, alternative: str = "two-sided", confidence: float = 0.95
) -> TestResult:
    """Exact binomial test of k successes in n trials; CI is Clopper-Pearson, as in scipy.stats.binomtest."""
    _check_alternative(alternative)
    if not 0 <= k <= n or n < 1:
        raise ValueError(f"need 0 <= k <= n and n >= 1, got k={k}, n={n}")
    if alternative == "greater":
        pval = _sp.binom.sf(k - 1, n, p)
    elif alternative == "less":
        pval = _sp.binom.cdf(k, n, p)
    else:
        # Two-sided by likelihood: sum every outcome no more probable than the observed one. The relative
        # slack 1+1e-7 matches scipy so outcomes tied up to float error are counted on both tails.
        pmf = _sp.binom.pmf(np.arange(n + 1), n, p)
        pval = pmf[pmf <= _sp.binom.pmf(k, n, p) * (1 + 1e-7)].sum()
    tail = (1.0 - confidence) / (2 if alternative == "two-sided" else 1)
    lo = 0.0 if k == 0 or alternative == "less" else float(_sp.beta.ppf(tail, k, n - k + 1))
    hi = 1.0 if k == n or alternative == "greater" else float(_sp.beta.ppf(1 - tail, k + 1, n - k))
    pval = min(float(pval), 1.0)
    return TestResult("binomial", float(k), pval, None, k / n, lo, hi, None, n, None, alternative, confidence)


def sign_test(
    x: ArrayLike, mu: float = 0.0, alternative: str = "two-sided", confidence: float = 0.95
) -> TestResult:
    """Sign test: are values above ``mu`` more (or less) frequent than below? Ties with ``mu`` are dropped.

    Under H0 each non-tied value is above ``mu`` with probability 1/2, so this is ``binomial_test(k, n, 0.5)``
    with k = #(x > mu); the estimate is the share above ``mu``.
    """
    v = _as_array(x, "x", min_n=1)
    above, below = int((v > mu).sum()), int((v < mu).sum())
    return replace(binomial_test(above, above + below, 0.5, alternative, confidence), name="sign")

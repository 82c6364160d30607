"""Is A really better than B? Intervals, tests and verdicts over runs' metrics, on scipy.

- `describe(values)`: n, mean, sample std and a 95% interval (Student t; or a percentile bootstrap);
- `welch`, `paired_t`, `wilcoxon` compare two groups of runs (one value per run; paired by seed);
- `mcnemar` compares two single runs example by example (exact binomial test on the discordant pairs);
- `holm` adjusts the p-values of several comparisons; `verdict` says the result in words, and never says
  "better" when the (adjusted) p-value is at least `alpha`;
- `one_sample` tests runs against a published value (the paper tables).

Every difference is a - b, every interval two-sided at `confidence`.
"""

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
ALPHA = 0.05
TESTS = ("welch", "paired_t", "wilcoxon", "mcnemar")
TEST_NAMES = {"welch": "Welch's t-test", "paired_t": "paired t-test", "wilcoxon": "Wilcoxon signed-rank test",
              "mcnemar": "McNemar's exact test", "one_sample_t": "one-sample t-test"}
INTERVALS = ("t", "bootstrap")


@dataclass(frozen=True)
class Summary:
    """A group's values: n, mean, sample standard deviation (None below 2 values) and an interval of the mean."""

    n: int
    mean: float
    std: float | None
    ci_low: float
    ci_high: float
    interval: str = "t"  # t | bootstrap

    def format(self, digits: int = 4) -> str:
        """mean ± std, as tables show it."""
        if self.n == 0:
            return "-"
        spread = f" ± {self.std:.{digits}f}" if self.std is not None else ""
        return f"{self.mean:.{digits}f}{spread}"


def describe(values: Iterable[float], confidence: float = CONFIDENCE, interval: str = "t",
             seed: int = 0) -> Summary:
    """The mean with a Student-t interval, or a percentile bootstrap interval (`interval="bootstrap"`, for few
    values of unknown shape; 9,999 resamples drawn from `seed`), of the finite values (None and NaN are left
    out). Below 2 values there is no interval (NaN)."""
    if interval not in INTERVALS:
        raise ValueError(f"interval must be one of {', '.join(INTERVALS)}, got {interval!r}")
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    n = len(x)
    if n == 0:
        return Summary(0, math.nan, None, math.nan, math.nan, interval)
    mean = float(x.mean())
    if n < 2:
        return Summary(1, mean, None, math.nan, math.nan, interval)
    std = float(x.std(ddof=1))
    if std == 0:  # every run the same value: no spread, the interval is the point
        return Summary(n, mean, 0.0, mean, mean, interval)
    if interval == "bootstrap":
        result = stats.bootstrap((x,), np.mean, confidence_level=confidence, method="percentile",
                                 n_resamples=9999, rng=np.random.default_rng(seed))
        low, high = result.confidence_interval
    else:
        half = stats.t.ppf((1 + confidence) / 2, n - 1) * std / math.sqrt(n)
        low, high = mean - half, mean + half
    return Summary(n, mean, std, float(low), float(high), interval)


@dataclass(frozen=True)
class Comparison:
    """a - b: the difference of the means (or of the accuracies, for McNemar), its interval, the test's p-value
    (and `p_adjusted` for several comparisons: Holm), and an effect size."""

    test: str  # one of TESTS
    n_a: int
    n_b: int
    mean_a: float
    mean_b: float
    diff: float
    ci_low: float
    ci_high: float
    p_value: float
    effect: float
    effect_name: str  # hedges_g | d_z | rank_biserial | odds_ratio
    p_adjusted: float | None = None

    @property
    def p(self) -> float:
        """The p-value a verdict goes by: the adjusted one where there is one."""
        return self.p_value if self.p_adjusted is None else self.p_adjusted


def welch(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE) -> Comparison:
    """Welch's t-test (unequal variances) of two independent groups; the effect is Hedges' g."""
    x, y = np.asarray(a, float), np.asarray(b, float)
    needs_two(x, y, "Welch's t-test")
    result = stats.ttest_ind(x, y, equal_var=False)
    low, high = result.confidence_interval(confidence)
    pooled = math.sqrt(((len(x) - 1) * x.var(ddof=1) + (len(y) - 1) * y.var(ddof=1)) / (len(x) + len(y) - 2))
    diff = float(x.mean() - y.mean())
    correction = 1 - 3 / (4 * (len(x) + len(y)) - 9)  # Hedges: Cohen's d is biased upwards in small samples
    g = diff / pooled * correction if pooled > 0 else math.copysign(math.inf, diff) if diff else 0.0
    return Comparison("welch", len(x), len(y), float(x.mean()), float(y.mean()), diff, float(low), float(high),
                      nan_to_one(result.pvalue), g, "hedges_g")


def paired_t(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE) -> Comparison:
    """The paired t-test (a[i] and b[i] share a seed); the effect is d_z, the mean difference over its std."""
    x, y = paired(a, b, "the paired t-test")
    d = x - y
    result = stats.ttest_rel(x, y)
    low, high = result.confidence_interval(confidence)
    sd = d.std(ddof=1)
    dz = float(d.mean() / sd) if sd > 0 else math.copysign(math.inf, d.mean()) if d.mean() else 0.0
    return Comparison("paired_t", len(x), len(y), float(x.mean()), float(y.mean()), float(d.mean()),
                      float(low), float(high), nan_to_one(result.pvalue), dz, "d_z")


def wilcoxon(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE) -> Comparison:
    """The Wilcoxon signed-rank test of paired values (exact for small n: with 5 pairs, p is at least 0.0625);
    the interval is the paired t interval of the differences; the effect is the matched-pairs rank-biserial
    correlation."""
    x, y = paired(a, b, "the Wilcoxon signed-rank test")
    d = x - y
    nonzero = d[d != 0]
    if len(nonzero) == 0:
        p, r = 1.0, 0.0
    else:
        p = nan_to_one(stats.wilcoxon(x, y).pvalue)
        ranks = stats.rankdata(np.abs(nonzero))
        r = float((ranks[nonzero > 0].sum() - ranks[nonzero < 0].sum()) / ranks.sum())
    sd = d.std(ddof=1)
    half = stats.t.ppf((1 + confidence) / 2, len(d) - 1) * sd / math.sqrt(len(d))
    return Comparison("wilcoxon", len(x), len(y), float(x.mean()), float(y.mean()), float(d.mean()),
                      float(d.mean() - half), float(d.mean() + half), p, r, "rank_biserial")


def mcnemar(correct_a: Sequence[bool], correct_b: Sequence[bool], confidence: float = CONFIDENCE) -> Comparison:
    """McNemar's exact test of two classifiers on the same test images: of the images exactly one of them gets
    right (a only: n01, b only: n10), is a's share 1/2? The difference is the accuracy difference, with a Wald
    interval for paired proportions; the effect is the odds ratio n01 / n10."""
    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError(f"McNemar's test needs both runs' predictions on the same test images "
                         f"({len(a)} and {len(b)} images)")
    n = len(a)
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    p = stats.binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
    diff = (only_a - only_b) / n
    se = math.sqrt(max((only_a + only_b) / n - diff ** 2, 0.0) / n)
    half = stats.norm.ppf((1 + confidence) / 2) * se
    odds = only_a / only_b if only_b else math.inf if only_a else 1.0
    return Comparison("mcnemar", n, n, float(a.mean()), float(b.mean()), diff, diff - half, diff + half,
                      float(p), odds, "odds_ratio")


def compare(test: str, a: Sequence, b: Sequence, confidence: float = CONFIDENCE) -> Comparison:
    """One of TESTS by name: values for the t-tests and Wilcoxon, per-example correctness for McNemar."""
    tests = {"welch": welch, "paired_t": paired_t, "wilcoxon": wilcoxon, "mcnemar": mcnemar}
    if test not in tests:
        raise ValueError(f"test must be one of {', '.join(TESTS)}, got {test!r}")
    return tests[test](a, b, confidence)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment (controls the family-wise error rate): the k-th smallest of m p-values is
    multiplied by m - k + 1, and the adjusted values are made monotone."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def adjust(comparisons: Sequence[Comparison]) -> list[Comparison]:
    """With more than one comparison, each gets its Holm-adjusted p-value; one comparison stays as it is."""
    if len(comparisons) < 2:
        return [replace(c, p_adjusted=c.p_value) for c in comparisons]
    return [replace(c, p_adjusted=p) for c, p in zip(comparisons, holm([c.p_value for c in comparisons]))]


@dataclass(frozen=True)
class OneSample:
    """Runs against a known value (a paper's): the mean's difference to it, its interval and the t-test's p."""

    n: int
    diff: float
    ci_low: float
    ci_high: float
    p_value: float


def one_sample(values: Sequence[float], reference: float, confidence: float = CONFIDENCE) -> OneSample:
    x = np.asarray(values, float)
    if len(x) < 2:
        raise ValueError(f"a one-sample t-test needs at least 2 values, got {len(x)}")
    if x.std(ddof=1) == 0:  # no spread: the difference is exact, the test undefined
        diff = float(x.mean() - reference)
        return OneSample(len(x), diff, diff, diff, 1.0 if diff == 0 else 0.0)
    result = stats.ttest_1samp(x, reference)
    low, high = result.confidence_interval(confidence)
    return OneSample(len(x), float(x.mean() - reference), float(low - reference), float(high - reference),
                     float(result.pvalue))


def verdict(a: str, b: str, c: Comparison, higher_is_better: bool = True, scale: float = 1.0, unit: str = "",
            alpha: float = ALPHA, confidence: float = CONFIDENCE, digits: int = 2) -> str:
    """ "A is better than B by 0.6 pp, 95% CI [0.2, 1.0], p = 0.004 (Welch's t-test)", or, when p >= alpha,
    "no significant difference between A and B: ...". `scale` and `unit` show the difference (100, "pp")."""
    unit = f" {unit}" if unit else ""
    level = f"{confidence * 100:g}% CI"
    diff, low, high = c.diff * scale, c.ci_low * scale, c.ci_high * scale
    test = TEST_NAMES[c.test] + (", Holm-adjusted" if c.p_adjusted is not None and c.p_adjusted != c.p_value else "")
    numbers = f"{level} [{low:+.{digits}f}, {high:+.{digits}f}], {p_text(c.p)} ({test})"
    if not c.p < alpha or diff == 0:
        return f"no significant difference between {a} and {b}: {a} - {b} = {diff:+.{digits}f}{unit}, {numbers}"
    better = (diff > 0) == higher_is_better
    winner, loser = (a, b) if better else (b, a)
    return f"{winner} is better than {loser} by {abs(diff):.{digits}f}{unit}, {numbers}"


def format_p(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def p_text(p: float) -> str:
    """p in a sentence: "p = 0.004", "p < 0.001"."""
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def needs_two(x: np.ndarray, y: np.ndarray, test: str) -> None:
    if len(x) < 2 or len(y) < 2:
        raise ValueError(f"{test} needs at least 2 runs per group, got {len(x)} and {len(y)}")


def paired(a: Sequence[float], b: Sequence[float], test: str) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(a, float), np.asarray(b, float)
    if len(x) != len(y):
        raise ValueError(f"{test} needs pairs: {len(x)} and {len(y)} values")
    needs_two(x, y, test)
    return x, y


def nan_to_one(p: float) -> float:
    """scipy's p is NaN when neither group has any spread (identical values): taken as 1, the cautious reading."""
    return 1.0 if math.isnan(p) else float(p)

"""imgrec.stats against independent references: textbook formulas written out here, scipy called directly on the
same numbers, and statsmodels (McNemar, Holm), which imgrec does not use."""

import math

import numpy as np
import pytest
from scipy import stats as sp
from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar
from statsmodels.stats.multitest import multipletests

from imgrec import stats

A = [0.912, 0.905, 0.918, 0.909, 0.915]
B = [0.901, 0.899, 0.907, 0.896, 0.904, 0.902]


def test_the_t_interval_of_a_mean_is_students():
    s = stats.describe(A)
    mean, sem = np.mean(A), sp.sem(A)
    low, high = sp.t.interval(0.95, len(A) - 1, loc=mean, scale=sem)
    assert (s.n, s.mean, s.std) == (5, pytest.approx(mean), pytest.approx(np.std(A, ddof=1)))
    assert (s.ci_low, s.ci_high) == (pytest.approx(low), pytest.approx(high))
    wider = stats.describe(A, confidence=0.99)
    assert wider.ci_low < s.ci_low and wider.ci_high > s.ci_high


def test_one_value_has_no_interval_and_missing_values_are_left_out():
    one = stats.describe([0.9, float("nan"), None])
    assert one.n == 1 and one.mean == 0.9 and one.std is None and math.isnan(one.ci_low)
    assert stats.describe([]).n == 0 and stats.describe([]).format() == "-"
    assert stats.describe([0.5, 0.5, 0.5]).ci_low == 0.5  # no spread


def test_the_bootstrap_interval_is_scipys_percentile_bootstrap_and_lies_inside_the_data():
    s = stats.describe(A, interval="bootstrap", seed=3)
    reference = sp.bootstrap((np.array(A),), np.mean, confidence_level=0.95, method="percentile", n_resamples=9999,
                             rng=np.random.default_rng(3)).confidence_interval
    assert (s.ci_low, s.ci_high) == (pytest.approx(reference.low), pytest.approx(reference.high))
    assert min(A) <= s.ci_low < np.mean(A) < s.ci_high <= max(A)
    with pytest.raises(ValueError, match="interval must be one of t, bootstrap"):
        stats.describe(A, interval="bca")


def test_welch_matches_scipy_and_the_welch_satterthwaite_interval():
    c = stats.welch(A, B)
    va, vb = np.var(A, ddof=1) / len(A), np.var(B, ddof=1) / len(B)
    df = (va + vb) ** 2 / (va ** 2 / (len(A) - 1) + vb ** 2 / (len(B) - 1))
    diff = np.mean(A) - np.mean(B)
    half = sp.t.ppf(0.975, df) * math.sqrt(va + vb)
    assert c.test == "welch" and c.diff == pytest.approx(diff)
    assert (c.ci_low, c.ci_high) == (pytest.approx(diff - half), pytest.approx(diff + half))
    assert c.p_value == pytest.approx(sp.ttest_ind(A, B, equal_var=False).pvalue)
    pooled = math.sqrt(((len(A) - 1) * np.var(A, ddof=1) + (len(B) - 1) * np.var(B, ddof=1)) / (len(A) + len(B) - 2))
    assert c.effect == pytest.approx(diff / pooled * (1 - 3 / (4 * (len(A) + len(B)) - 9)))
    with pytest.raises(ValueError, match="needs at least 2 runs per group, got 1 and 6"):
        stats.welch([0.9], B)


def test_the_paired_t_test_and_wilcoxon_match_scipy_on_the_differences():
    b = B[:5]
    d = np.subtract(A, b)
    c = stats.paired_t(A, b)
    half = sp.t.ppf(0.975, 4) * np.std(d, ddof=1) / math.sqrt(5)
    assert c.p_value == pytest.approx(sp.ttest_rel(A, b).pvalue)
    assert c.p_value == pytest.approx(sp.ttest_1samp(d, 0).pvalue)
    assert (c.ci_low, c.ci_high) == (pytest.approx(d.mean() - half), pytest.approx(d.mean() + half))
    assert c.effect == pytest.approx(d.mean() / np.std(d, ddof=1))
    w = stats.wilcoxon(A, b)
    assert w.p_value == pytest.approx(sp.wilcoxon(A, b).pvalue) and w.p_value >= 0.0625  # 5 pairs: exact minimum
    assert w.effect == pytest.approx(1.0)  # every difference positive: rank-biserial 1
    with pytest.raises(ValueError, match="needs pairs: 5 and 6 values"):
        stats.paired_t(A, B)


def test_mcnemar_is_the_exact_binomial_test_of_the_discordant_images():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 10, 2000)
    a = np.where(rng.random(2000) < 0.92, truth, (truth + 1) % 10)
    b = np.where(rng.random(2000) < 0.90, truth, (truth + 2) % 10)
    ca, cb = a == truth, b == truth
    c = stats.mcnemar(ca, cb)
    table = [[int((ca & cb).sum()), int((ca & ~cb).sum())], [int((~ca & cb).sum()), int((~ca & ~cb).sum())]]
    assert c.p_value == pytest.approx(sm_mcnemar(table, exact=True).pvalue)
    assert c.p_value == pytest.approx(sp.binomtest(table[0][1], table[0][1] + table[1][0]).pvalue)
    assert c.diff == pytest.approx(ca.mean() - cb.mean()) and c.ci_low < c.diff < c.ci_high
    assert c.effect == pytest.approx(table[0][1] / table[1][0])
    same = stats.mcnemar(ca, ca)
    assert same.p_value == 1.0 and same.diff == 0.0
    with pytest.raises(ValueError, match="the same test images"):
        stats.mcnemar(ca, cb[:10])


def test_holm_matches_statsmodels():
    p = [0.01, 0.04, 0.03, 0.005, 0.2, 0.04]
    assert stats.holm(p) == pytest.approx(list(multipletests(p, method="holm")[1]))
    comparisons = stats.adjust([stats.welch(A, B), stats.welch(B, A), stats.welch(A, [0.5, 0.6])])
    assert all(c.p_adjusted >= c.p_value for c in comparisons)
    (alone,) = stats.adjust([stats.welch(A, B)])
    assert alone.p_adjusted == alone.p_value


def test_the_one_sample_test_against_a_published_value_matches_scipy():
    t = stats.one_sample(A, 0.90)
    reference = sp.ttest_1samp(A, 0.90)
    low, high = reference.confidence_interval(0.95)
    assert t.p_value == pytest.approx(reference.pvalue) and t.diff == pytest.approx(np.mean(A) - 0.90)
    assert (t.ci_low, t.ci_high) == (pytest.approx(low - 0.90), pytest.approx(high - 0.90))
    with pytest.raises(ValueError, match="at least 2 values"):
        stats.one_sample([0.9], 0.9)


def test_a_verdict_says_better_only_when_the_p_value_is_below_alpha():
    significant = stats.welch(A, B)
    assert significant.p_value < 0.05
    said = stats.verdict("cnn", "mlp", significant, scale=100, unit="pp")
    assert said.startswith(f"cnn is better than mlp by {significant.diff * 100:.2f} pp, 95% CI [+")
    assert "(Welch's t-test)" in said
    assert stats.verdict("cnn", "mlp", significant, higher_is_better=False).startswith("mlp is better than cnn")
    noisy = stats.welch([0.90, 0.95, 0.85], [0.91, 0.86, 0.93])
    assert noisy.p_value >= 0.05
    said = stats.verdict("cnn", "mlp", noisy)
    assert said.startswith("no significant difference between cnn and mlp") and "better" not in said
    adjusted, _ = stats.adjust([significant, noisy])
    said = stats.verdict("cnn", "mlp", adjusted)
    assert "Holm-adjusted" in said and adjusted.p_adjusted > adjusted.p_value
    assert ("better" in said) == (adjusted.p_adjusted < 0.05)  # the adjusted p decides, not the raw one

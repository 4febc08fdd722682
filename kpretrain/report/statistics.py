"""How sure an answer is: t intervals, paired t-tests, Holm adjustment, seeds needed, paired bootstrap, the share of
a natural pre-training's gain that an arm recovers (scipy)."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

LEVEL = 0.95  # confidence level of every interval
ALPHA = 0.05  # two-sided significance level of every test
POWER = 0.8  # power that `seeds_needed` aims for
BOOTSTRAP_MIN_SEEDS = 10  # a paired bootstrap interval is added from this many seeds on
WEAK_BELOW_SEEDS = 5  # fewer seeds: the verdict says the evidence is weak


def t_interval(values, level: float = LEVEL) -> dict:
    """The Student t interval of the mean of `values` (n - 1 degrees of freedom).

    Args:
        values: the numbers, e.g. one accuracy per seed.
        level: the confidence level (`LEVEL`, 0.95).

    Returns:
        {n, mean, std, ci}: `std` is the sample standard deviation (0.0 for one value); `ci` is [low, high], None
        for one value and [mean, mean] when every value is equal.
    """
    a = np.asarray(values, dtype=float)
    n = len(a)
    mean = float(a.mean())
    std = float(a.std(ddof=1)) if n > 1 else 0.0
    if n < 2:
        ci = None
    else:
        half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * std / math.sqrt(n)
        ci = [mean - half, mean + half]
    return {"n": n, "mean": mean, "std": std, "ci": ci}


def accuracy_interval(ci):
    """An accuracy's interval as shown: the t interval clipped to [0, 1] (an accuracy cannot leave it, a t
    interval of few spread-out seeds can).  metrics.json keeps the interval as computed.

    Example:
        >>> accuracy_interval([-0.0791, 0.4291])
        [0.0, 0.4291]
    """
    return None if not ci else [min(max(float(ci[0]), 0.0), 1.0), min(max(float(ci[1]), 0.0), 1.0)]


def seeds_needed(diff: float, std: float, power: float = POWER, alpha: float = ALPHA, limit: int = 10_000) -> int | None:
    """Smallest number of seeds for which a two-sided paired t-test at `alpha` detects a mean difference `diff`
    with paired standard deviation `std` with probability `power` (noncentral t).

    Args:
        diff: the mean paired difference to detect.
        std: the standard deviation of the paired differences.
        power: the probability of detecting it (`POWER`, 0.8).
        alpha: the two-sided significance level (`ALPHA`, 0.05).
        limit: the largest number of seeds considered.

    Returns:
        The number of seeds; None if there is no effect to detect (diff 0), no noise estimate (std 0), or
        `limit` seeds would not reach `power`.
    """
    if diff == 0 or std <= 0 or not math.isfinite(diff / std):
        return None
    effect = abs(diff) / std

    def achieved(n: int) -> float:
        critical, shift = stats.t.ppf(1 - alpha / 2, n - 1), effect * math.sqrt(n)
        value = stats.nct.sf(critical, n - 1, shift) + stats.nct.cdf(-critical, n - 1, shift)
        if not math.isfinite(value):  # scipy's noncentral t fails far in the tail: the normal limit is exact there
            value = stats.norm.sf(critical - shift) + stats.norm.cdf(-critical - shift)
        return value

    if achieved(limit) < power:
        return None
    low, high = 1, limit  # power grows with n: bisect for the first n that reaches it
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if achieved(middle) >= power else (middle, high)
    return high


def paired_comparison(differences, level: float = LEVEL) -> dict:
    """The paired differences arm - baseline over seeds: t interval, two-sided paired t-test p-value (None with one
    seed or zero variance), a percentile bootstrap interval from BOOTSTRAP_MIN_SEEDS seeds, and the seeds a
    difference of this size would need.

    Args:
        differences: the per-seed differences arm - baseline.
        level: the confidence level of both intervals (`LEVEL`, 0.95).

    Returns:
        `t_interval`'s {n, mean, std, ci} and `p`, `bootstrap_ci` (None below BOOTSTRAP_MIN_SEEDS seeds or with
        zero variance; resampled with a fixed seed) and `seeds_needed` (see `seeds_needed`; None with one seed).
    """
    d = np.asarray(differences, dtype=float)
    out = t_interval(d, level)
    n, std = out["n"], out["std"]
    out["p"] = None
    if n > 1 and std > 0:
        out["p"] = float(stats.ttest_1samp(d, 0.0).pvalue)
    out["bootstrap_ci"] = None
    if n >= BOOTSTRAP_MIN_SEEDS and std > 0:
        result = stats.bootstrap((d,), np.mean, confidence_level=level, n_resamples=9999, method="percentile",
                                 random_state=np.random.default_rng(0))
        out["bootstrap_ci"] = [float(result.confidence_interval.low), float(result.confidence_interval.high)]
    out["seeds_needed"] = seeds_needed(out["mean"], std) if n > 1 else None
    return out


def benefit_ratio(arm_diffs, natural_diffs, *, resamples: int = 10_000, seed: int = 0, level: float = LEVEL) -> dict:
    """The "% of benefit" of an arm: mean(arm - scratch) / mean(natural - scratch), the ratio of the mean paired
    differences (a ratio of per-seed ratios would explode when a seed's denominator is near zero), with a percentile
    interval from a paired bootstrap over seeds (each resample draws the same seed indices for the numerator and the
    denominator).

    Args:
        arm_diffs: the arm's per-seed differences to its baseline.
        natural_diffs: the natural arm's per-seed differences to its baseline, aligned with `arm_diffs` by seed.
        resamples: the number of bootstrap resamples.
        seed: the seed of the resampling.
        level: the confidence level of the intervals (`LEVEL`, 0.95).

    Returns:
        {n, ratio, ci95, defined, reason, natural}: `natural` is the natural arm's difference (mean, ci95: the
        t interval the report shows for every difference).  The ratio is undefined (`defined` false, ratio and ci95
        None, `reason` says why) with fewer than two seeds, when the natural arm's interval contains zero (its gain
        is not established, so the ratio means nothing) or lies below zero (it hurts), or when some resample's
        natural mean is exactly zero (unbounded interval).

    Raises:
        ValueError: the two lists are not equally long one-dimensional lists.
    """
    a, nat = np.asarray(arm_diffs, dtype=float), np.asarray(natural_diffs, dtype=float)
    if a.shape != nat.shape or a.ndim != 1:
        raise ValueError(f"benefit_ratio: paired differences must be two equally long lists, got {a.shape} and {nat.shape}")
    n = len(a)
    natural = t_interval(nat, level) if n else {"mean": None, "ci": None}
    out = {"n": n, "ratio": None, "ci95": None, "defined": False, "reason": None,
           "natural": {"mean": natural["mean"], "ci95": natural["ci"]}}
    if n < 2:
        out["reason"] = f"{n} paired seed{'s' if n != 1 else ''}: no interval; run more seeds"
        return out
    low, high = natural["ci"]
    if low <= 0.0 <= high:
        out["reason"] = (f"the natural arm's gain is not established (its difference to scratch, "
                         f"{100 * natural['mean']:+.2f} pts [{100 * low:+.2f}, {100 * high:+.2f}], contains zero)")
        return out
    if high < 0.0:
        out["reason"] = (f"natural pre-training hurts here ({100 * natural['mean']:+.2f} pts [{100 * low:+.2f}, "
                         f"{100 * high:+.2f}]): there is no benefit to take a share of")
        return out
    index = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    numerators, denominators = a[index].mean(axis=1), nat[index].mean(axis=1)
    if np.any(denominators == 0.0):
        out["reason"] = "the natural arm's mean gain is zero in some bootstrap resamples (unbounded interval)"
        return out
    ratios = numerators / denominators
    tail = 100 * (1 - level) / 2
    out.update(ratio=float(a.mean() / nat.mean()), defined=True,
               ci95=[float(v) for v in np.percentile(ratios, [tail, 100 - tail])])
    return out


def holm(pvalues) -> list:
    """Holm-Bonferroni adjusted p-values, in the input order; None entries (no test) are kept and not counted.

    Args:
        pvalues: the p-values of one family of comparisons, None where a comparison has no test.

    Returns:
        A list as long as `pvalues`: each adjusted p-value (at most 1), None where the input is None.

    Example:

    >>> holm([0.01, None, 0.04, 0.03])
    [0.03, None, 0.06, 0.06]
    """
    indexed = sorted((p, i) for i, p in enumerate(pvalues) if p is not None)
    m = len(indexed)
    adjusted: list = [None] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(indexed):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


SMOKE_VERDICT = "smoke run: tiny data, numbers mean nothing"


def verdict(arm: str, baseline: str, comparison: dict, adjusted_p: float | None = None, comparisons: int = 1,
            smoke: bool = False) -> str:
    """One plain line: the difference in points, its interval, the p-value (Holm-adjusted beside it when the run
    makes several comparisons), the evidence, and for fewer than WEAK_BELOW_SEEDS seeds the seeds needed.

    Args:
        arm: the arm's name.
        baseline: its baseline's name.
        comparison: the arm's `paired_comparison` of accuracies (fractions; the line shows points).
        adjusted_p: its Holm-adjusted p-value, which decides the evidence when given; None to use `p`.
        comparisons: the number of comparisons in the family; the adjusted p-value is shown when above 1.
        smoke: a `--smoke` run: the line says its numbers mean nothing, and gives no seeds needed.

    Returns:
        The line.

    Example:

    >>> verdict("overlay", "scratch", paired_comparison([0.01, 0.03, 0.02, 0.035, 0.01]))
    'overlay vs scratch: +2.1 pts [+0.7, +3.5], p = 0.01, evidence of a gain (5 seeds)'
    """
    if smoke:
        return f"{_verdict(arm, baseline, comparison, adjusted_p, comparisons, power=False)}; {SMOKE_VERDICT}"
    return _verdict(arm, baseline, comparison, adjusted_p, comparisons, power=True)


def _verdict(arm: str, baseline: str, comparison: dict, adjusted_p, comparisons: int, power: bool) -> str:
    """`verdict`'s line; `power`: add, below WEAK_BELOW_SEEDS seeds, that the evidence is weak and the seeds needed."""
    c, n = comparison, comparison["n"]
    head = f"{arm} vs {baseline}: {100 * c['mean']:+.1f} pts"
    if n < 2:
        return f"{head} (1 seed: no interval and no test; run more seeds)"
    low, high = c["ci"]
    head += f" [{100 * low:+.1f}, {100 * high:+.1f}]"
    if c["p"] is None:  # every seed gave the same difference
        word = "gain" if c["mean"] > 0 else "loss" if c["mean"] < 0 else "no difference"
        return f"{head}, the same on every seed ({word}; zero variance, no p-value; {n} seeds)"
    p = c["p"] if adjusted_p is None else adjusted_p
    shown = f"p = {_p(c['p'])}" + (f", Holm-adjusted p = {_p(adjusted_p)} ({comparisons} comparisons)"
                                   if adjusted_p is not None and comparisons > 1 else "")
    if p < ALPHA:
        evidence = f"evidence of a {'gain' if c['mean'] > 0 else 'loss'}"
    else:
        evidence = "no evidence of a difference"
    line = f"{head}, {shown}, {evidence} ({n} seeds)"
    if n < WEAK_BELOW_SEEDS and power:
        need = c.get("seeds_needed")
        line += (f"; with {n} seeds the evidence is weak: a difference of {100 * abs(c['mean']):.1f} pts would need "
                 f"{need} seeds for 80 % power" if need else f"; with {n} seeds the evidence is weak")
    return line


def _p(p: float) -> str:
    return f"{p:.2g}" if p < 0.01 else f"{p:.2f}"

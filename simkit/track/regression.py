"""Is a benchmark slower than before? Median change plus a rank test, and change points over time.

A change is a *regression* only when both hold:
  1. the median moved the wrong way by more than `threshold` (a relative change, 0.05 = 5%), and
  2. the Mann-Whitney U test (two-sided, scipy.stats.mannwhitneyu) says the two sample sets differ
     with p < `alpha`.
(1) keeps tiny but real shifts (a 1% wobble measured very precisely) from failing CI; (2) keeps one
noisy run from doing so. The test is rank-based, so it needs no normality and one wild sample
cannot carry it. With few samples it cannot reach significance at all: with n_old and n_new samples
the smallest two-sided p it can give is 2 / C(n_old + n_new, n_old) (0.33 for 2 vs 2, 0.1 for 3 vs 3),
so such a comparison is reported as "noise" with that reason, never as a regression.

The test treats samples as independent, but the samples of one run share that run's machine state
(clock, neighbours, cache and page placement), so two runs on a shared machine can differ
"significantly" with no cause in the code. When the baseline is several runs (`baseline_runs`, the
median of each), a third condition applies:
  3. the new median lies outside the range the baseline runs predict for one more run: the
     normal-theory prediction interval for one future observation, centre +- t(1 - alpha/2, N - 1)
     * scale * sqrt(1 + 1/N) (Hahn & Meeker, Statistical Intervals, 1991), on log medians, with the
     median and 1.4826 * MAD standing in for the mean and sd so that one disturbed baseline run
     does not widen it (an approximation: the textbook interval uses mean and sd).
A change inside that range is "noise": the machine varies that much from run to run.

Two more conditions need no earlier runs; they use what each run saw of its own machine. Both came
from quiet back-to-back calibrations on a shared 2-vCPU cloud VM, whose speed moves by up to a third
for tens of seconds at a time (fp32 GEMM at 315-320 GFLOP/s, then 250-280, sometimes 160; no stolen
time shows in /proc/stat), so one quiet run can sit lower than the next in every round:
  4. the change exceeds the *within-run swing*: how far apart the round medians of one run lie
     (max / min - 1, the larger of the two runs; `round_swing`), measured the same way (faster
     median / slower median - 1, so a halving is 100%). A machine that moved 20% between the
     rounds of one run can move 20% between two runs with nothing changed.
  5. the slower run, at its best, stays short of the faster run's median: its best samples (the
     90th percentile of rates, the 10th of times: `best_sample`) are more than `threshold` worse
     than the other median. Interference only slows a kernel down, so the fastest samples show what
     the machine can still do (Chen & Revels, "Robust benchmarking in noisy environments", 2016:
     timing noise is overwhelmingly positive, so the minimum time is the most stable estimator). A
     slower code path or a loaded machine slows nearly every sample; a neighbour that comes and goes
     for seconds does not. Not the single fastest sample: under busy loops that time-slice the
     cores, one sample in 20 can still land in a slice with the cores free (seen on the CI VM: one
     fp32 GEMM sample at full speed among 19 at a third of it).
On a steady machine (rounds and samples wandering 1%) they move the smallest change caught
reliably from about 7% to 8-9% (simulated in README; tests/test_history_rounds.py); a halving passes
both by far.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

VERDICTS = ("regression", "improvement", "no change", "noise")
Verdict = Literal["regression", "improvement", "no change", "noise"]


@dataclass(frozen=True, kw_only=True, slots=True)
class Comparison:
    """The verdict on one benchmark, old samples versus new."""

    name: str
    """Benchmark name, e.g. ``matmul.fp32.1024x1024x1024`` ("" when compared bare)."""
    unit: str
    """Unit of the samples, e.g. ``flop_per_s`` or ``s``."""
    higher_is_better: bool
    old_median: float
    new_median: float
    change: float
    """Relative change of the median, (new - old) / old; +0.2 means 20% larger."""
    p_value: float
    """Two-sided Mann-Whitney U p-value (1.0 when it is undefined, e.g. every sample equal)."""
    verdict: Verdict
    n_old: int
    n_new: int
    note: str = ""
    """Why the verdict is what it is, where that is not obvious."""
    run_range: tuple[float, float] | None = None
    """With several baseline runs: the relative changes (like `change`) a new run's median falls
    between with probability 1 - alpha if runs vary as the baseline runs did (condition 3)."""
    within_run_swing: float | None = None
    """The larger relative range of the round medians inside either run (condition 4)."""

    @property
    def change_pct(self) -> float:
        return 100.0 * self.change


def median_iqr(samples) -> tuple[float, float]:
    """Median and interquartile range (75th - 25th percentile, linear interpolation)."""
    import numpy as np

    values = np.asarray(samples, dtype=float)
    if values.size == 0:
        raise ValueError("no samples")
    q25, q50, q75 = np.percentile(values, [25, 50, 75])
    return float(q50), float(q75 - q25)


def smallest_p(n_old: int, n_new: int) -> float:
    """Smallest two-sided p the exact Mann-Whitney U test can give for these sample counts."""
    return min(1.0, 2.0 / math.comb(n_old + n_new, n_old))


def _relative_change(old: float, new: float) -> float:
    if old == 0:
        return 0.0 if new == 0 else math.copysign(math.inf, new)
    return (new - old) / abs(old)


def _p_value(old, new) -> float:
    from scipy.stats import mannwhitneyu

    if min(old) == max(old) == min(new) == max(new):
        return 1.0  # every sample equal: no evidence of any difference (scipy would give nan)
    p = float(mannwhitneyu(old, new, alternative="two-sided").pvalue)
    return 1.0 if math.isnan(p) else p


def run_prediction_range(run_medians, alpha: float = 0.05) -> tuple[float, float] | None:
    """Range (low, high) of the median of one more run, from the medians of earlier runs: a
    prediction interval on log medians with median and MAD (see the module docstring). None for
    fewer than two runs or a non-positive median."""
    import numpy as np
    from scipy.stats import t

    medians = np.asarray(run_medians, dtype=float)
    if medians.size < 2 or medians.min() <= 0:
        return None
    logs = np.log(medians)
    centre = float(np.median(logs))
    scale = 1.4826 * float(np.median(np.abs(logs - centre)))  # MAD -> sd for normal data
    half = float(t.ppf(1 - alpha / 2, logs.size - 1)) * scale * math.sqrt(1 + 1 / logs.size)
    return math.exp(centre - half), math.exp(centre + half)


def compare(old_samples, new_samples, higher_is_better: bool, threshold: float = 0.05,
            alpha: float = 0.05, *, baseline_runs=None, within_run_swing: float | None = None,
            best: tuple[float, float] | None = None, name: str = "", unit: str = "") -> Comparison:
    """Compare two sets of samples of one benchmark; see the module docstring for the rule.

    `baseline_runs`: the medians of the separate runs whose samples make up `old_samples`; with two
    or more, a change must also leave their run-to-run prediction range to count (condition 3).
    `within_run_swing`: see `round_swing`; a change must be larger to count (condition 4).
    `best`: `best_sample` of (old, new); the slower side's must miss the other side's median by more
    than `threshold` to count (condition 5)."""
    old = [float(x) for x in old_samples]
    new = [float(x) for x in new_samples]
    if not old or not new:
        raise ValueError(f"compare needs samples on both sides (got {len(old)} old, {len(new)} new)")
    old_median, _ = median_iqr(old)
    new_median, _ = median_iqr(new)
    change = _relative_change(old_median, new_median)
    p = _p_value(old, new)
    worse = change < 0 if higher_is_better else change > 0
    pct = f"{100 * change:+.1f}%"
    bounds = run_prediction_range(baseline_runs, alpha) if baseline_runs is not None else None
    run_range = (tuple(_relative_change(old_median, b) for b in bounds) if bounds and old_median
                 else None)
    if abs(change) <= threshold:
        verdict = "no change"
        note = (f"significant (p={p:.2g}) but within the {100 * threshold:g}% threshold"
                if p < alpha else "")
    elif p < alpha and run_range and run_range[0] <= change <= run_range[1]:
        verdict = "noise"
        note = (f"{pct} (p={p:.2g}) but within the run-to-run spread of the {len(baseline_runs)} "
                f"baseline runs: a new run lands in {100 * run_range[0]:+.0f}%..{100 * run_range[1]:+.0f}% "
                f"{100 * (1 - alpha):g}% of the time")
    elif p < alpha and within_run_swing is not None and _fold(old_median, new_median) <= 1 + within_run_swing:
        verdict = "noise"
        note = (f"{pct} (p={p:.2g}): the faster median is {100 * (_fold(old_median, new_median) - 1):.0f}% "
                f"above the slower, but within one run the best round was {100 * within_run_swing:.0f}% "
                f"above the worst: the machine drifts that much inside a run")
    elif p < alpha and best is not None and _best_reaches(best, old_median, new_median, worse,
                                                            higher_is_better, threshold):
        slower, faster = ("new", "old") if worse else ("old", "new")
        gap = _best_gap(best, old_median, new_median, worse)
        verdict = "noise"
        note = (f"{pct} (p={p:.2g}) but the {slower} run's fastest tenth of samples is {100 * gap:+.1f}% "
                f"from the {faster} median, within {100 * threshold:g}%: at its best the machine ran as fast")
    elif p < alpha:
        verdict = "regression" if worse else "improvement"
        note = ""
    else:
        verdict = "noise"
        floor = smallest_p(len(old), len(new))
        note = (f"{pct} but too few samples ({len(old)} vs {len(new)}): the smallest possible p is "
                f"{floor:.2g}, not below alpha {alpha:g}" if floor >= alpha else
                f"{pct} but not significant (p={p:.2g} >= alpha {alpha:g})")
    return Comparison(name=name, unit=unit, higher_is_better=higher_is_better,
                      old_median=old_median, new_median=new_median, change=change, p_value=p,
                      verdict=verdict, n_old=len(old), n_new=len(new), note=note, run_range=run_range,
                      within_run_swing=within_run_swing)


MIN_ROUNDS = 3


def _fold(a: float, b: float) -> float:
    """The larger of two positive values over the smaller (1.25: 25% apart, either way round);
    the measure the within-run swing uses, so that -20% and +25% are the same distance."""
    low, high = sorted((abs(a), abs(b)))
    return math.inf if low == 0 else high / low


def _best_gap(best: tuple[float, float], old_median: float, new_median: float, worse: bool) -> float:
    """Relative distance of the slower side's `best_sample` from the faster side's median."""
    old_best, new_best = best
    return _relative_change(old_median, new_best) if worse else _relative_change(new_median, old_best)


def _best_reaches(best, old_median, new_median, worse: bool, higher_is_better: bool, threshold: float) -> bool:
    """Condition 5: does the slower side's `best_sample` come within `threshold` of the other median?"""
    gap = _best_gap(best, old_median, new_median, worse)
    return (gap if higher_is_better else -gap) >= -threshold


BEST_PERCENTILE = 90.0


def best_sample(samples, higher_is_better: bool) -> float:
    """What the fastest tenth of the samples reached: the 90th percentile of rates, the 10th of times
    (numpy's linear interpolation; with one sample, that sample)."""
    import numpy as np

    return float(np.percentile(samples, BEST_PERCENTILE if higher_is_better else 100.0 - BEST_PERCENTILE))


def round_swing(round_medians) -> float | None:
    """How far apart one run's round medians lie: max / min - 1 (0.2: the best round was 20% above
    the worst). None with fewer than MIN_ROUNDS rounds or a non-positive median."""
    values = [float(x) for x in round_medians or ()]
    if len(values) < MIN_ROUNDS or min(values) <= 0:
        return None
    return max(values) / min(values) - 1.0


def independent_units(old: dict, new: dict) -> tuple[list[float], list[float]]:
    """The values the significance test compares: per-round medians when both sides have at least
    MIN_ROUNDS of them, else the raw samples.

    Samples taken back to back share one machine state (clock, cache, noisy neighbours), so on a
    drifting machine a test over raw samples calls run-to-run drift "significant". `simkit calibrate`
    measures every benchmark in interleaved rounds spread over the run; the round medians are the
    independent measurements (5 vs 5 rounds: smallest possible two-sided p = 0.008).
    """
    old_rounds, new_rounds = old.get("round_medians") or [], new.get("round_medians") or []
    if len(old_rounds) >= MIN_ROUNDS and len(new_rounds) >= MIN_ROUNDS:
        return list(old_rounds), list(new_rounds)
    return list(old["samples"]), list(new["samples"])


def pool_runs(specs: list[dict]) -> dict:
    """One benchmark entry standing for several runs of it (oldest first): their samples together,
    the median of each run ("run_medians", condition 3), their round medians together, and the
    largest swing seen inside any one run ("round_swing", condition 4)."""
    first = specs[-1]
    pooled = {"unit": first.get("unit", ""), "higher_is_better": first.get("higher_is_better", True),
              "samples": [x for spec in specs for x in spec["samples"]],
              "run_medians": [median_iqr(spec["samples"])[0] for spec in specs]}
    if all(spec.get("round_medians") for spec in specs):
        pooled["round_medians"] = [x for spec in specs for x in spec["round_medians"]]
        swings = [_swing_of(spec) for spec in specs]
        if all(x is not None for x in swings):
            pooled["round_swing"] = max(swings)
    return pooled


def _swing_of(spec: dict) -> float | None:
    return spec["round_swing"] if "round_swing" in spec else round_swing(spec.get("round_medians"))


def compare_specs(old: dict, new: dict, threshold: float = 0.05, alpha: float = 0.05, name: str = "") -> Comparison:
    """Compare two entries of one benchmark, each {"samples": [...], "higher_is_better": bool,
    "unit": str} and optionally "round_medians"; `old` may stand for several runs (`pool_runs`)."""
    higher_is_better = bool(new.get("higher_is_better", True))
    old_units, new_units = independent_units(old, new)
    old_swing, new_swing = _swing_of(old), _swing_of(new)
    swing = max(old_swing, new_swing) if old_swing is not None and new_swing is not None else None
    best = (best_sample(old["samples"], higher_is_better), best_sample(new["samples"], higher_is_better))
    return compare(old_units, new_units, higher_is_better, threshold, alpha,
                   baseline_runs=old.get("run_medians"), within_run_swing=swing, best=best,
                   name=name, unit=str(new.get("unit", "")))


def compare_benchmarks(old: dict, new: dict, threshold: float = 0.05, alpha: float = 0.05
                       ) -> tuple[list[Comparison], list[str], list[str]]:
    """Compare every benchmark two records share.

    `old` and `new` map benchmark name -> entry (the ``benchmarks`` of a history record, or for the
    baseline `pool_runs` of several). Returns (comparisons in name order, names only in old, names
    only in new).
    """
    results = [compare_specs(old[name], new[name], threshold, alpha, name)
               for name in sorted(set(old) & set(new))]
    return results, sorted(set(old) - set(new)), sorted(set(new) - set(old))


def change_points(specs: list[dict], threshold: float = 0.05, alpha: float = 0.05,
                  window: int = 5) -> list[tuple[int, Comparison]]:
    """Runs where the benchmark stepped, oldest first.

    `specs`: the benchmark's entry in each run, as `compare_specs` takes them. Walking forward, run
    i is compared with the up-to-`window` runs before it since the last change point, pooled
    (`pool_runs`); a "regression" or "improvement" verdict makes i a change point and starts a new
    segment there. This is `simkit history check --baseline median-of-5` asked at every step of the
    history, so runs after a step are compared with the new level, not the old one.
    Returns (index of the run, its Comparison) pairs.
    """
    points, start = [], 0
    for i in range(1, len(specs)):
        result = compare_specs(pool_runs(specs[max(start, i - window):i]), specs[i], threshold, alpha)
        if result.verdict in ("regression", "improvement"):
            points.append((i, result))
            start = i
    return points

"""The regression rule: median change beyond the threshold AND Mann-Whitney p < alpha."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simkit.track.regression import (best_sample, change_points, compare, compare_benchmarks, compare_specs,
                               median_iqr, pool_runs, round_swing, smallest_p)


def _samples(seed, n=15, center=100.0, noise=0.02):
    """n throughput samples around `center` with relative noise `noise` (sd)."""
    return np.random.default_rng(seed).normal(center, noise * center, n)


def _spec(samples, higher_is_better=True):
    return {"samples": list(samples), "higher_is_better": higher_is_better, "unit": "flop_per_s"}


def test_median_and_iqr_by_hand():
    assert median_iqr([5, 1, 4, 2, 3]) == (3.0, 2.0)  # quartiles 2 and 4


def test_smallest_p_of_the_exact_test():
    assert smallest_p(2, 2) == pytest.approx(2 / 6)    # C(4, 2) = 6 orderings
    assert smallest_p(3, 3) == pytest.approx(0.1)      # C(6, 3) = 20
    assert smallest_p(15, 15) < 1e-7


def test_20_percent_throughput_drop_is_a_regression():
    result = compare(_samples(1), _samples(2, center=80.0), higher_is_better=True)
    assert result.verdict == "regression"
    assert result.change == pytest.approx(-0.2, abs=0.02)
    assert result.p_value < 1e-4
    assert (result.n_old, result.n_new) == (15, 15)


def test_20_percent_longer_time_is_a_regression_when_lower_is_better():
    result = compare(_samples(1, center=0.010), _samples(2, center=0.012), higher_is_better=False)
    assert result.verdict == "regression"
    assert result.change_pct == pytest.approx(20, abs=2)


def test_20_percent_faster_is_an_improvement():
    assert compare(_samples(1), _samples(2, center=120.0), True).verdict == "improvement"
    assert compare(_samples(1), _samples(2, center=80.0), False).verdict == "improvement"


@pytest.mark.parametrize("noise", [0.02, 0.10])
def test_identical_distributions_are_not_flagged_across_200_seeds(noise):
    # With 10% noise the median of 15 samples often moves more than 5%; the test must stop those.
    verdicts = [compare(_samples(2 * s, noise=noise), _samples(2 * s + 1, noise=noise), True).verdict
                for s in range(200)]
    assert verdicts.count("regression") <= 0.05 * 200 / 2  # two-sided: alpha/2 per direction


def test_false_positive_rate_of_the_test_alone_is_at_most_alpha():
    # threshold 0 leaves only the significance test: two-sided at alpha 0.05 it fires on about 5%
    # of identical pairs (2.5% each way). 200 seeds: expected 10, sd 3.1.
    flagged = sum(compare(_samples(2 * s), _samples(2 * s + 1), True, threshold=0.0).verdict
                  in ("regression", "improvement") for s in range(200))
    assert flagged <= 0.05 * 200 + 6


def test_significant_change_below_threshold_is_no_change():
    result = compare(_samples(1, noise=0.002), _samples(2, center=97.0, noise=0.002), True)
    assert result.p_value < 1e-4
    assert result.verdict == "no change"
    assert "significant" in result.note and "within the 5% threshold" in result.note


def test_large_change_with_too_few_samples_is_noise_and_says_why():
    result = compare([100.0, 101.0], [50.0, 51.0], higher_is_better=True)
    assert result.verdict == "noise"
    assert result.p_value == pytest.approx(1 / 3)
    assert "too few samples (2 vs 2)" in result.note and "0.33" in result.note


def test_large_change_drowned_in_spread_is_noise():
    old = [100.0, 60.0, 140.0, 90.0, 110.0, 70.0, 130.0]
    new = [80.0, 130.0, 50.0, 95.0, 70.0, 120.0, 60.0]
    result = compare(old, new, True)
    assert result.change == pytest.approx(-0.2)
    assert result.verdict == "noise"
    assert "not significant" in result.note


def test_every_sample_equal_is_no_change_with_p_one():
    result = compare([3.0] * 5, [3.0] * 5, True)
    assert (result.verdict, result.p_value, result.change) == ("no change", 1.0, 0.0)


def test_empty_samples_are_refused():
    with pytest.raises(ValueError, match="samples on both sides"):
        compare([], [1.0], True)


def test_compare_benchmarks_reports_names_on_one_side_only():
    old = {"a": {"samples": [1.0, 1.0], "higher_is_better": True}, "b": {"samples": [1.0]}}
    new = {"a": {"samples": [1.0, 1.0], "higher_is_better": True}, "c": {"samples": [1.0]}}
    results, only_old, only_new = compare_benchmarks(old, new)
    assert [r.name for r in results] == ["a"]
    assert (only_old, only_new) == (["b"], ["c"])


def test_change_points_find_the_step():
    runs = [_samples(s) for s in range(4)] + [_samples(s, center=70.0) for s in range(4, 8)]
    points = change_points([_spec(r) for r in runs])
    assert [(i, r.verdict) for i, r in points] == [(4, "regression")]


samples = st.lists(st.floats(1.0, 1e3, allow_nan=False), min_size=3, max_size=20)


@settings(max_examples=60, deadline=None)
@given(old=samples, new=samples, scale=st.sampled_from([1e-6, 1e3, 1e9]))
def test_verdict_does_not_depend_on_the_unit(old, new, scale):
    a = compare(old, new, True)
    b = compare([x * scale for x in old], [x * scale for x in new], True)
    assert a.p_value == pytest.approx(b.p_value)
    if abs(abs(a.change) - 0.05) > 1e-9:  # exactly at the threshold rounding may tip either way
        assert a.verdict == b.verdict


@settings(max_examples=60, deadline=None)
@given(old=samples, new=samples)
def test_flipping_better_direction_swaps_regression_and_improvement(old, new):
    swap = {"regression": "improvement", "improvement": "regression"}
    up, down = compare(old, new, True), compare(old, new, False)
    assert down.verdict == swap.get(up.verdict, up.verdict)


def test_run_prediction_range_by_hand():
    from simkit.track.regression import run_prediction_range

    assert run_prediction_range([100.0]) is None
    low, high = run_prediction_range([np.exp(-1), np.exp(1)])  # log median 0, MAD 1
    half = 12.7062 * 1.4826 * np.sqrt(1.5)                      # t(0.975, 1) = 12.706
    assert (np.log(low), np.log(high)) == (pytest.approx(-half, rel=1e-4), pytest.approx(half, rel=1e-4))
    assert run_prediction_range([5.0, 5.0, 5.0]) == (pytest.approx(5.0), pytest.approx(5.0))


def test_one_disturbed_baseline_run_does_not_widen_the_range():
    from simkit.track.regression import run_prediction_range

    low, high = run_prediction_range([100, 102, 98, 101, 3.0])  # the last run shared the machine
    assert 90 < low < 100 < high < 110


def _runs(centers, seed=0):
    runs = [_samples(seed + i, center=c) for i, c in enumerate(centers)]
    return runs, [float(np.median(r)) for r in runs]


def test_change_within_run_to_run_spread_is_noise():
    runs, medians = _runs([100, 115, 90, 108, 95])  # the machine wanders +-12% between runs
    result = compare(np.concatenate(runs), _samples(99, center=88.0), True, baseline_runs=medians)
    assert result.p_value < 0.05 and result.change < -0.05
    assert result.verdict == "noise"
    assert "within the run-to-run spread of the 5 baseline runs" in result.note
    low, high = result.run_range
    assert low < result.change < 0 < high


def test_change_beyond_run_to_run_spread_is_a_regression():
    runs, medians = _runs([100, 101, 99, 100, 102])
    result = compare(np.concatenate(runs), _samples(99, center=80.0), True, baseline_runs=medians)
    assert result.verdict == "regression"
    assert result.run_range[0] > -0.1


def test_a_single_baseline_run_adds_no_range():
    result = compare(_samples(1), _samples(2, center=80.0), True, baseline_runs=[100.0])
    assert (result.verdict, result.run_range) == ("regression", None)


def test_change_points_restart_after_a_step():
    # 100 -> 70 -> 50: two steps, and the runs between them are compared with the new level
    centers = [100] * 3 + [70] * 3 + [50] * 3
    points = change_points([_spec(_samples(s, center=c)) for s, c in enumerate(centers)])
    assert [(i, r.verdict) for i, r in points] == [(3, "regression"), (6, "regression")]
    assert points[1][1].change == pytest.approx(-2 / 7, abs=0.03)  # 70 -> 50, not 100 -> 50


# ---------------------------------------------------------------- conditions 4 and 5 (one run each)
def _rounds(levels, per_round=4, seed=0, noise=0.005):
    """A run measured in rounds, each round at its own level (the machine's state at the time)."""
    rng = np.random.default_rng(seed)
    rounds = [rng.normal(level, noise * level, per_round) for level in levels]
    return {"samples": [float(x) for r in rounds for x in r], "round_medians": [float(np.median(r)) for r in rounds],
            "higher_is_better": True, "unit": "flop_per_s"}


def test_round_swing_by_hand():
    assert round_swing([250.0, 320.0, 300.0]) == pytest.approx(0.28)   # 320 / 250 - 1
    assert round_swing([1.0, 2.0]) is None                            # too few rounds to say
    assert round_swing(None) is None


def test_change_inside_the_swing_of_one_run_is_noise():
    # like two quiet runs on the CI VM: every round of B is below every round of A (p = 0.008), but
    # inside B the machine moved between 238 and 296 GFLOP/s, and B's best never reached A's median
    old = _rounds([300, 318, 316, 312, 320], seed=1)
    new = _rounds([238, 262, 296, 258, 290], seed=2)
    result = compare_specs(old, new)
    assert result.p_value < 0.05 and result.change < -0.15
    assert result.verdict == "noise"
    assert result.within_run_swing == pytest.approx(296 / 238 - 1, abs=0.02)
    assert result.note == ("-16.8% (p=0.0079): the faster median is 20% above the slower, but within one "
                           "run the best round was 25% above the worst: the machine drifts that much inside a run")


def test_slower_run_reaching_the_old_median_at_its_best_is_noise():
    old = _rounds([316, 318, 317, 319, 318], seed=3)
    new = _rounds([280, 283, 281, 282, 284], seed=4)    # tight, 12% lower, beyond any swing ...
    new["samples"][4:7] = [314.0, 314.0, 314.0]          # ... but 3 of 20 samples ran at the old speed
    result = compare_specs(old, new)
    assert result.verdict == "noise"
    assert "new run's fastest tenth of samples is -1.1% from the old median, within 5%" in result.note


def test_one_lucky_sample_does_not_rescue_a_loaded_run():
    # busy loops time-slice the cores: on the CI VM one fp32 GEMM sample in 20 still ran at full speed
    old = _rounds([266, 265, 264, 267, 265], seed=17)
    busy = _rounds([129, 98, 89, 90, 98], seed=18, noise=0.05)
    busy["samples"][7] = 317.0
    result = compare_specs(old, busy)
    assert result.verdict == "regression" and result.change < -0.6


def test_best_sample_is_the_fastest_tenth():
    samples = list(range(1, 21))                         # 1..20
    assert best_sample(samples, True) == pytest.approx(18.1)     # 90th percentile, linear
    assert best_sample(samples, False) == pytest.approx(2.9)     # 10th: the shortest times
    assert best_sample([5.0], True) == 5.0


def test_halved_throughput_passes_every_condition():
    old = _rounds([256, 309, 312, 256, 300], seed=5)     # even against a swinging baseline
    busy = _rounds([160, 150, 170, 140, 165], seed=6, noise=0.05)
    result = compare_specs(old, busy)
    assert (result.verdict, round(result.change, 1)) == ("regression", -0.5)


def test_swing_and_change_are_measured_alike():
    # the busy-loop run on the CI VM: rounds between 60 and 128 GFLOP/s (a swing of 113%) against
    # a steady 311: a drop of 71% is a factor 3.5, far beyond a factor 2.1 of swing
    old = _rounds([311, 312, 310, 311, 313], seed=15)
    busy = _rounds([60, 90, 128, 85, 95], seed=16)
    result = compare_specs(old, busy)
    assert result.verdict == "regression"
    assert result.within_run_swing == pytest.approx(1.13, abs=0.03)


def test_a_real_10_percent_slowdown_on_a_steady_machine_is_still_caught():
    old = _rounds([316, 318, 317, 319, 318], seed=7)
    new = _rounds([x * 0.9 for x in (316, 318, 317, 319, 318)], seed=8)
    assert compare_specs(old, new).verdict == "regression"


def test_improvement_needs_the_old_run_to_fall_short_at_its_best():
    old = _rounds([280, 283, 281, 282, 284], seed=9)
    new = _rounds([316, 318, 317, 319, 318], seed=10)
    assert compare_specs(old, new).verdict == "improvement"
    old["samples"][0:3] = [318.0, 318.0, 318.0]
    result = compare_specs(old, new)
    assert result.verdict == "noise" and "old run's fastest tenth of samples" in result.note


def test_lower_is_better_best_is_the_shortest_time():
    old = {**_rounds([1.00, 1.01, 1.00, 0.99, 1.00], seed=11), "higher_is_better": False, "unit": "s"}
    new = {**_rounds([1.20, 1.21, 1.19, 1.20, 1.22], seed=12), "higher_is_better": False, "unit": "s"}
    assert compare_specs(old, new).verdict == "regression"
    new["samples"][3:6] = [1.02, 1.02, 1.02]             # 3 of 20 as quick as before
    assert compare_specs(old, new).verdict == "noise"


def test_pool_runs_keeps_each_runs_median_and_the_largest_swing():
    a, b = _rounds([100, 100, 100], seed=13, noise=0), _rounds([100, 120, 110], seed=14, noise=0)
    pooled = pool_runs([a, b])
    assert pooled["run_medians"] == [100.0, 110.0]
    assert pooled["round_swing"] == pytest.approx(0.2)
    assert len(pooled["samples"]) == 24 and len(pooled["round_medians"]) == 6

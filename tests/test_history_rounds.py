"""Run-to-run drift vs real change: per-round medians are the independent units of a comparison."""
from __future__ import annotations

import random

from simkit.measure.timing import Rate
from simkit.track.regression import compare, compare_benchmarks, independent_units


def test_round_medians_follow_the_round_boundaries():
    first = Rate.from_seconds(1.0, (1.0, 0.5, 0.25), "flop_per_s")        # rates 1, 2, 4
    both = first.extended(Rate.from_seconds(1.0, (0.1, 0.1), "flop_per_s"))  # rates 10, 10
    assert both.rounds == (3, 2)
    assert both.round_medians == (2.0, 10.0)
    assert both.samples == (1.0, 2.0, 4.0, 10.0, 10.0)


def test_rounds_are_used_only_when_both_sides_have_enough():
    a = {"samples": [1, 2, 3], "round_medians": [1, 2, 3]}
    b = {"samples": [4, 5, 6], "round_medians": [4, 5, 6]}
    assert independent_units(a, b) == ([1, 2, 3], [4, 5, 6])
    assert independent_units({"samples": [1, 2]}, b) == ([1, 2], [4, 5, 6])
    assert independent_units({"samples": [9], "round_medians": [1, 2]}, b) == ([9], [4, 5, 6])


def _run(level: float, rounds: int, per_round: int, rng: random.Random, wander=None, noise: float = 0.005) -> dict:
    """A run whose rounds each sit at their own drifted level (`wander(rng)`, default uniform
    +-12%: the machine wanders between rounds), with samples inside a round `noise` apart (sd)."""
    samples, medians = [], []
    for _ in range(rounds):
        round_level = level * (wander(rng) if wander else rng.uniform(0.88, 1.12))
        values = [round_level * rng.gauss(1.0, noise) for _ in range(per_round)]
        samples += values
        medians.append(sorted(values)[per_round // 2])
    return {"unit": "flop_per_s", "higher_is_better": True, "samples": samples, "round_medians": medians}


def test_drift_between_quiet_runs_is_not_flagged_but_a_halving_is():
    false_alarms = 0
    for seed in range(100):
        rng = random.Random(seed)
        old, new = _run(100.0, 5, 5, rng), _run(100.0 * rng.uniform(0.93, 1.07), 5, 5, rng)
        results, _, _ = compare_benchmarks({"m": old}, {"m": new})
        false_alarms += results[0].verdict == "regression"
        slow = _run(50.0, 5, 5, rng)
        results, _, _ = compare_benchmarks({"m": old}, {"m": slow})
        assert results[0].verdict == "regression", seed
    assert false_alarms <= 5          # alpha = 0.05 over 100 independent tries


def test_raw_samples_alone_would_call_the_same_drift_significant():
    # the reason for the rounds: the bare rule (threshold + Mann-Whitney) on the raw samples flags
    # the same quiet pairs often; on the round medians about alpha of the time
    on_samples = on_rounds = 0
    for seed in range(100):
        rng = random.Random(seed)
        old, new = _run(100.0, 5, 5, rng), _run(100.0 * rng.uniform(0.93, 1.07), 5, 5, rng)
        on_samples += compare(old["samples"], new["samples"], True).verdict == "regression"
        on_rounds += compare(old["round_medians"], new["round_medians"], True).verdict == "regression"
    assert on_samples > 10
    assert on_rounds <= 5


def _steady_run(level: float, rng: random.Random) -> dict:
    """A quiet run on a steady machine: 1% round-to-round wander, 1% noise within a round."""
    return _run(level, 5, 4, rng, wander=lambda r: r.gauss(1.0, 0.01), noise=0.01)


def test_every_condition_together_flags_a_20_percent_shift_and_not_identical_runs():
    # the whole rule (threshold, Mann-Whitney on round medians, within-run swing, best sample) on
    # the records calibrate writes: a 20% or 12% drop is caught for every seed, identical runs never
    false_alarms = 0
    for seed in range(200):
        rng = random.Random(seed)
        old = _steady_run(100.0, rng)
        for slower in (80.0, 88.0):
            results, _, _ = compare_benchmarks({"m": old}, {"m": _steady_run(slower, rng)})
            assert results[0].verdict == "regression", (seed, slower)
        results, _, _ = compare_benchmarks({"m": old}, {"m": _steady_run(100.0, rng)})
        false_alarms += results[0].verdict == "regression"
    assert false_alarms == 0      # 1% wander cannot move a median by the 5% threshold

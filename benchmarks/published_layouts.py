"""Where published tuned layouts rank in `simkit optimize` (issue 13): for every NeMo and Megatron-Bridge run
in a published-cases file, search every layout with the model, GPU count, global batch and precision of the
run held fixed, and compare the published layout's predicted step time with the best one's.

    PYTHONPATH=. python benchmarks/published_layouts.py ../shared/validation/published-dev-2.yaml > table.md
"""
from __future__ import annotations

import copy
import sys

from simkit.core.errors import SimkitError
from simkit.search.optimize import optimize
from simkit.validate.published import load_published

TUNED = ("nemo", "mbridge")


def short(settings: dict) -> str:
    g = settings.get
    text = f"TP{g('parallelism.tensor_parallel')} PP{g('parallelism.pipeline_parallel')}"
    if g("parallelism.virtual_pipeline_stages", 1) > 1:
        text += f"x{g('parallelism.virtual_pipeline_stages')}"
    text += f" CP{g('parallelism.context_parallel')} DP{g('parallelism.data_parallel')} mb{g('training.micro_batch_size')}"
    text += f" Z{g('parallelism.zero_stage')} AC:{g('training.activation_checkpointing')}"
    if g("parallelism.tensor_parallel", 1) > 1 and not g("parallelism.sequence_parallel", True):
        text += " noSP"
    return text


def main(path: str) -> None:
    print("| case | GPUs | published layout | its step (pred.) | measured | best layout | best step (pred.) | "
          "published vs best | where simkit's best gains |")
    print("|---|---|---|---|---|---|---|---|---|")
    for case in load_published(path):
        if not case.id.startswith(TUNED):
            continue
        raw = copy.deepcopy(case.plan.data)
        try:
            result = optimize(raw, top=3)
        except SimkitError as exc:
            print(f"| {case.id} | | | | {case.measured_step_time_s:.2f} s | {exc.message} | | | |")
            continue
        best, mine = result.top[0], result.as_written
        if mine is None:
            print(f"| {case.id} | {result.devices} | ({result.as_written_note}) | | {case.measured_step_time_s:.2f} s | "
                  f"{short(best.settings)} | {best.prediction.step_time_s:.2f} s | | |")
            continue
        gap = mine.prediction.step_time_s / best.prediction.step_time_s - 1
        why = "" if gap <= 0.05 else _why_short(best, mine)
        fits = "" if not result.as_written_note else " (over memory)"
        print(f"| {case.id} | {result.devices} | {short(mine.settings)}{fits} | {mine.prediction.step_time_s:.2f} s | "
              f"{case.measured_step_time_s:.2f} s | {short(best.settings)} | {best.prediction.step_time_s:.2f} s | "
              f"{gap * 100:+.1f} % | {why} |")


def _why_short(best, mine) -> str:
    from simkit.search.optimize import _why

    return _why(best, mine).replace("|", "/")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/validation/published-dev-2.yaml")

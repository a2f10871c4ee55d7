"""Predicted FP8 / bf16 speed-up of every FP8 run in a published-cases file, layout held fixed.

Each FP8 run is predicted as published and again in bf16 (same model, GPUs, layout and stack; the FP8
recipe dropped); the table says whether the bf16 variant still fits. Published bf16 twins of these runs,
where a file has them, are the check.

    PYTHONPATH=. python benchmarks/fp8_speedup.py tests/data/published-dev-2.yaml
"""
from __future__ import annotations

import copy
import sys

from simkit.core.yamlio import Located
from simkit.model.step import predict
from simkit.plan import load_plan_located
from simkit.validate.published import load_published


def rows(path: str):
    for case in load_published(path):
        data = {k: x for k, x in case.plan.data.items() if k not in ("assumed", "notes")}
        if data["training"].get("precision") != "fp8":
            continue
        fp8 = predict(load_plan_located(Located(copy.deepcopy(data), case.plan.file, case.plan.lines)))
        data["training"]["precision"] = "bf16"
        data["training"].pop("fp8_recipe", None)
        plan = load_plan_located(Located(data, case.plan.file, {}))
        bf16 = predict(plan)
        p = plan.parallelism
        layout = (f"TP{p.tensor_parallel} PP{p.pipeline_parallel}x{p.virtual_pipeline_stages} "
                  f"CP{p.context_parallel} DP{p.data_parallel}")
        yield case, layout, fp8, bf16


def main() -> None:
    print("| fp8 case | layout | measured fp8 step | predicted fp8 | predicted bf16 (same layout) | predicted speed-up "
          "| bf16 fits |")
    print("|---|---|---:|---:|---:|---:|---|")
    for case, layout, fp8, bf16 in rows(sys.argv[1]):
        print(f"| {case.id} | {layout} | {case.measured_step_time_s:.2f} s | {fp8.step_time_s:.2f} s | "
              f"{bf16.step_time_s:.2f} s | {bf16.step_time_s / fp8.step_time_s:.2f}x | "
              f"{'yes' if bf16.fits_in_memory else 'no'} |")


if __name__ == "__main__":
    main()

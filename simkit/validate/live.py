"""Holding predictions against live training runs on this machine.

`validate_live(plan, ...)` picks a variant of the plan that fits this machine, predicts it, trains it
for real (simkit.measure.training, under torchrun for data_parallel > 1) and compares the step time and
its breakdown; `suite_summary` sums up a folder of plans. Nothing here prints.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from simkit.core.errors import SimkitError
from simkit.model.precision import policy
from simkit.plan import Plan
from simkit.validate.common import PredictFn, default_predict, memory_error, prediction_dict, relative_error

MAX_STEP_S = 60.0            # a variant is chosen when the plan's predicted step is longer than this
MEMORY_FRACTION = 0.8        # share of the available memory a live run may plan to use
NOISY_IQR_FRACTION = 0.10    # warn when the step-time IQR exceeds this share of the median
SMALL_PART_FRACTION = 0.01   # parts below this share of the measured step get no relative error
PAGE_FAULT_NOTE = 1000       # mention page faults above this many per step
BREAKDOWN_KEYS = ("forward", "backward", "recompute", "optimizer", "communication_exposed",
                  "communication_total", "other")

# ----------------------------------------------------------------------------- fitting the machine
def estimate_memory_bytes(plan: Plan) -> float:
    """Rough bytes one training worker needs: 16 per parameter (fp32 weight, grad, two Adam states)
    plus activations after Korthikanti et al. 2022, Sec. 4.1 (34*s*b*h + 5*a*s^2*b bytes per layer at
    2-byte activations; the score term only for eager attention), plus logits and their gradient."""
    from simkit.model.workload import parameter_count

    m, t = plan.model, plan.training
    params = parameter_count(m.n_layers, m.d_model, m.n_heads, m.n_kv_heads, m.d_ff, m.vocab_size, m.mlp,
                             m.tied_embeddings)
    half = 2.0 if t.precision in ("fp32", "tf32") else 1.0     # fp32 activations are twice the 16-bit size
    b, s, h = t.micro_batch_size, m.seq_len, m.d_model
    layer = 34.0 * s * b * h * half
    if m.attention == "eager" and t.activation_checkpointing == "none":
        layer += 5.0 * m.n_heads * s * s * b * half
    layers = m.n_layers * layer
    if t.activation_checkpointing == "full":
        layers = m.n_layers * 2.0 * s * b * h * half + layer
    logits = s * b * m.vocab_size * 12.0           # logits, fp32 softmax and gradient
    return 16.0 * params + layers + logits


def _smaller(plan: Plan) -> Plan | None:
    """The next smaller variant with the same per-layer shapes: fewer layers, then a smaller micro-batch,
    then no accumulation; None when nothing is left to shrink."""
    spec = copy.deepcopy(plan.spec)
    m, t = spec.model, spec.training
    if m.n_layers > 1:
        m.n_layers //= 2
    elif t.micro_batch_size > 1:
        t.micro_batch_size //= 2
    elif t.grad_accum_steps > 1:
        t.grad_accum_steps = 1
    else:
        return None
    t.global_batch_size = t.micro_batch_size * t.grad_accum_steps * spec.parallelism.data_parallel
    return dataclasses.replace(plan, spec=spec)


def variant_changes(plan: Plan, variant: Plan) -> list[str]:
    """The `--set` overrides that turn `plan` into `variant`."""
    keys = (("model", "n_layers"), ("training", "micro_batch_size"), ("training", "grad_accum_steps"),
            ("training", "global_batch_size"))
    return [f"{section}.{key}={getattr(getattr(variant.spec, section), key)}" for section, key in keys
            if getattr(getattr(plan.spec, section), key) != getattr(getattr(variant.spec, section), key)]


def fit_variant(plan: Plan, *, memory_budget_bytes: float, max_step_s: float = MAX_STEP_S,
                predict_fn: PredictFn = default_predict) -> tuple[Plan, str | None]:
    """(plan to measure, why it was scaled down or None). memory_budget_bytes is per worker:
    available RAM / data_parallel on a CPU, one GPU's free memory on CUDA."""
    variant, why = plan, None
    while True:
        mem, step_s = estimate_memory_bytes(variant), predict_fn(variant).step_time_s
        if mem <= memory_budget_bytes and step_s <= max_step_s:
            return variant, why
        if why is None:
            why = (f"the plan needs about {mem / 2**30:.2f} GiB per worker (budget {memory_budget_bytes / 2**30:.2f} GiB)"
                   f" and about {step_s:.1f} s per step (limit {max_step_s:g} s)")
        variant = _smaller(variant)
        if variant is None:
            raise SimkitError(f"{why}; even 1 layer, micro-batch 1 and no accumulation does not fit this machine")


def live_support_error(plan: Plan, device: str, device_count: int) -> str | None:
    """Why this plan cannot be trained live here, or None."""
    p, t = plan.parallelism, plan.training
    if p.tensor_parallel > 1 or p.pipeline_parallel > 1 or p.zero_stage > 0:
        return ("live validation trains with plain DDP only: tensor_parallel and pipeline_parallel must be 1 "
                "and zero_stage 0 (use --set to change them)")
    if plan.hw.nodes > 1:
        return "live validation runs on one node; set hardware.nodes=1"
    if t.precision == "fp8":
        return "fp8 cannot be measured live; use --set training.precision=bf16"
    if p.data_parallel > device_count:
        unit = "GPUs" if device == "cuda" else "CPU cores"
        return f"data_parallel {p.data_parallel} needs {p.data_parallel} {unit}; this machine has {device_count}"
    return None


def hf_check(plan: Plan) -> None:
    """Refuse, with a sentence, a plan that --implementation hf cannot train (transformers missing, no HF class
    for the model, a checkpointing policy HF does not have)."""
    from simkit.measure import hf_models

    hf_models.transformers_version()
    spec = dataclasses.asdict(plan.spec)
    reason = hf_models.support_error(spec["model"], spec["training"])
    if reason:
        raise SimkitError(reason, file=plan.source if plan.source != "<dict>" else None)


def hf_notes(plan: Plan, measured: dict) -> list[str]:
    """Which HF class ran and what it does that the plan's keys do not describe."""
    from simkit.measure import hf_models
    from simkit.model.workload import parameter_count

    m, spec = plan.model, dataclasses.asdict(plan.spec)
    info = measured.get("hf_model") or {}
    planned = parameter_count(m.n_layers, m.d_model, m.n_heads, m.n_kv_heads, m.d_ff, m.vocab_size, m.mlp,
                              m.tied_embeddings)
    ran = (f"ran the Hugging Face model {info.get('class', '?')} (transformers {info.get('transformers_version', '?')}, "
           f"attn_implementation {info.get('attn_implementation', '?')!r}, random init)")
    return [ran] + hf_models.differences(spec["model"], spec["training"], info.get("n_params"), planned)


# ----------------------------------------------------------------------------- measuring
def worker_threads(plan: Plan, threads: int | None = None) -> int:
    """Threads per worker: as given, else this machine's cores shared among the data-parallel workers."""
    from simkit.measure import cpu_count

    return threads or max(1, cpu_count() // plan.parallelism.data_parallel)


def choose_profile(profiles: list[str], threads: int) -> str:
    """Of several calibrated profiles, the one calibrated with `threads` threads (else the first): a CPU
    worker that gets 1 of 2 cores is a different device from a process that uses both."""
    from simkit.hardware import load_device

    for path in profiles:
        cal = load_device(path).calibration
        if cal is not None and (cal.environment or {}).get("threads") == threads:
            return path
    return profiles[0]


def worker_config(plan: Plan, *, steps: int, warmup: int, threads: int, device: str,
                  flush_denormal: bool = True, implementation: str = "simkit") -> dict:
    """What simkit.measure.training needs: the model and training sections, loop lengths, threads, and
    which model to build (simkit's own or the Hugging Face class, simkit.measure.hf_models)."""
    model = dataclasses.asdict(plan.model)
    model.pop("preset", None)
    training = dataclasses.asdict(plan.training)
    # with a calibrated profile, the worker also times the profile's GEMM now (machine_speed)
    cal = plan.device.calibration
    probe = policy(plan.training.precision).gemm_dtype if cal is not None else None
    probe_threads = (cal.environment or {}).get("threads") if cal is not None else None
    return {"model": model, "training": training, "steps": steps, "warmup": warmup,
            "threads": threads, "device": device, "flush_denormal": flush_denormal, "probe_dtype": probe,
            "probe_threads": probe_threads, "implementation": implementation}


def machine_speed(plan: Plan, measured: dict) -> float | None:
    """The probe GEMM's rate during the measurement over the rate the profile gives that GEMM: 0.85
    means the machine ran 15% slower than when it was calibrated (None without a probe)."""
    from simkit.model import cost

    probe = measured.get("probe")
    if not probe:
        return None
    m, n, k = probe["shape"]
    expected = float(cost.matmul_rate(plan.device, probe["dtype"], m, n, k))
    return probe["flop_per_s_median"] / expected if expected > 0 else None


def training_command(data_parallel: int, config: Path, out: Path) -> list[str]:
    """The torchrun command line of a `data_parallel`-process measurement (DDP workers of simkit.measure.training)."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={data_parallel}",
            "-m", "simkit.measure.training", "--config", str(config), "--out", str(out)]


def launch_timeout_s(config: dict, predicted_step_s: float) -> float:
    """Default limit of a live run: 10 minutes of start-up plus 10x the predicted time of its steps."""
    return 600 + 10 * (config["steps"] + config["warmup"]) * max(predicted_step_s, 1.0)


def run_measurement(config: dict, data_parallel: int, timeout_s: float | None = None) -> dict:
    """Measure in this process (one worker) or under torchrun with DDP (gloo on CPU, NCCL on CUDA).

    A multi-process run runs in its own process group: past `timeout_s`, or on Ctrl-C/SIGTERM, every
    worker is stopped, and the error names the rank that failed or hung and what it was doing. A run
    whose worker was aborted (gloo occasionally aborts on loopback) is launched once more; the result
    then carries a note saying so."""
    from simkit.measure import launch

    if data_parallel == 1:
        from simkit.measure.training import measure

        return measure(config)
    what = f"the {data_parallel}-process training run"
    limit = timeout_s if timeout_s is not None else 3600.0
    config = dict(config, timeout_s=limit)  # a rank gives up waiting for the others no later than the launch
    failures = []
    for _attempt in range(2):
        with tempfile.TemporaryDirectory(prefix="simkit-validate-") as tmp:
            cfg, out, log = Path(tmp) / "config.json", Path(tmp) / "result.json", Path(tmp) / "workers.log"
            cfg.write_text(json.dumps(config))
            env = dict(os.environ, OMP_NUM_THREADS=str(config["threads"]))
            process = launch.start(training_command(data_parallel, cfg, out), log, env=env)
            finished = launch.wait(process, limit)
            text = launch.read(log)
            if not finished:
                raise SimkitError(launch.hang(text, "simkit-train", what, limit, "--timeout"))
            if process.returncode == 0 and out.exists():
                result = json.loads(out.read_text())
                if failures:
                    result.setdefault("notes", []).append(f"launched twice: the first launch failed ({failures[0]})")
                return result
            failures.append(launch.failure(text, "simkit-train", what, process.returncode))
            if "(SIGABRT) received" not in text:
                break
    raise SimkitError(failures[-1])


def breakdown_rows(predicted: dict, measured: dict) -> list[dict]:
    """Predicted vs measured per part of a step. The measured backward includes any recomputation,
    so the row compares it with predicted backward + recompute; communication_total is not part of the step."""
    pb, mb = predicted["breakdown_s"], measured["breakdown_s"]
    pairs = [("forward", pb.get("forward", 0.0), mb["forward"]),
             ("backward+recompute", pb.get("backward", 0.0) + pb.get("recompute", 0.0), mb["backward"]),
             ("optimizer", pb.get("optimizer", 0.0), mb["optimizer"]),
             ("communication_exposed", pb.get("communication_exposed", 0.0), mb["communication_exposed"]),
             ("other", pb.get("other", 0.0), mb["other"]),
             ("step", predicted["step_time_s"], measured["step_time_s"]),
             ("communication_total", pb.get("communication_total", 0.0), mb["communication_total"])]
    rows = []
    for name, p, m in pairs:
        # a part under 1% of the step has no meaningful relative error; 'error_of_step' still shows it
        err = relative_error(p, m) if m > SMALL_PART_FRACTION * measured["step_time_s"] else None
        share = (p - m) / measured["step_time_s"]
        rows.append({"part": name, "predicted_s": p, "measured_s": m, "error": err,
                     "error_of_step": None if name in ("step", "communication_total") else share})
    return rows


def _notes(plan: Plan, measured: dict, why: str | None, changes: list[str]) -> list[str]:
    notes = [f"optimizer: {measured['optimizer_impl']}", f"precision: {measured['precision_note']}"]
    notes += measured.get("notes", [])
    if measured["environment"].get("flush_denormal"):
        notes.append("subnormal floats flushed to zero (--no-flush-denormal measures torch's default)")
    if why:
        notes.append(f"scaled down ({why}); measured the variant {' '.join(changes)}")
    cal = plan.device.calibration
    profile_threads = (cal.environment or {}).get("threads") if cal else None
    threads = measured["environment"]["threads"]
    if profile_threads and profile_threads != threads:
        notes.append(f"the profile was calibrated with {profile_threads} threads; each worker here used {threads}")
    faults = measured.get("page_faults_per_step", 0)
    if faults > PAGE_FAULT_NOTE:
        notes.append(f"{faults:.0f} minor page faults per step (~{faults * 4096 / 2**20:.0f} MiB of memory freshly "
                     "mapped and touched each step: the allocator hands big buffers back to the OS); predicted from "
                     "the profile's first_touch bandwidth when it has one")
    iqr, step = measured["step_time_iqr_s"], measured["step_time_s"]
    if step > 0 and iqr / step > NOISY_IQR_FRACTION:
        notes.append(f"noisy: step-time IQR is {100 * iqr / step:.0f}% of the median; rerun with more --steps")
    return notes


SPEED_NOTE_OFF = 0.05   # machine speed this far from 1.0 gets a note


def _speed_note(speed: float | None, measured: dict) -> list[str]:
    if speed is None or abs(speed - 1.0) <= SPEED_NOTE_OFF:
        return []
    probe = measured["probe"]
    shape = "x".join(map(str, probe["shape"]))
    return [f"the machine ran at {speed:.2f}x the profile's speed (a {probe['dtype']} {shape} GEMM timed right "
            f"before and after the steps); at that speed a compute-bound step takes {100 * (1 / speed - 1):+.0f}% "
            "longer than predicted, a difference from the machine, not the model"]


def validate_live(plan: Plan, *, steps: int = 10, warmup: int = 3, threads: int | None = None,
                  device: str = "auto", scale_down: bool = True, max_step_s: float = MAX_STEP_S,
                  flush_denormal: bool = True, implementation: str = "simkit",
                  predict_fn: PredictFn = default_predict, timeout_s: float | None = None) -> dict:
    """Predict and measure one plan (or the variant of it that fits this machine) and compare them.
    implementation: 'simkit' trains simkit's own model, 'hf' the Hugging Face class of the plan's model;
    either way the prediction is of the plan as written. `timeout_s` limits a multi-process run (default:
    launch_timeout_s)."""
    if implementation == "hf":
        hf_check(plan)
    from simkit.measure import training

    try:
        kind = training.local_device(device)
    except RuntimeError as exc:
        raise SimkitError(f"--device {device}: {exc}") from None
    count = training.local_device_count(kind)
    dp = plan.parallelism.data_parallel
    reason = live_support_error(plan, kind, count)
    if reason:
        raise SimkitError(reason, file=plan.source if plan.source != "<dict>" else None)
    threads = worker_threads(plan, threads)
    budget = MEMORY_FRACTION * training.available_memory_bytes(kind) / (dp if kind == "cpu" else 1)
    variant, why = fit_variant(plan, memory_budget_bytes=budget, max_step_s=max_step_s, predict_fn=predict_fn)
    changes = variant_changes(plan, variant)
    if why and not scale_down:
        raise SimkitError(f"{why}; rerun without --no-scale-down to measure the variant "
                          + " ".join(f"--set {c}" for c in changes))
    predicted = prediction_dict(predict_fn(variant))
    config = worker_config(variant, steps=steps, warmup=warmup, threads=threads, device=kind,
                           flush_denormal=flush_denormal, implementation=implementation)
    timeout = timeout_s if timeout_s is not None else launch_timeout_s(config, predicted["step_time_s"])
    measured = run_measurement(config, dp, timeout_s=timeout)
    speed = machine_speed(variant, measured)
    notes = _notes(plan, measured, why, changes) + _speed_note(speed, measured)
    if implementation == "hf":
        notes += hf_notes(variant, measured)
    return {"machine_speed": speed, "plan_file": plan.source, "plan": dataclasses.asdict(variant.spec),
            "profile": plan.device.path or plan.device.name, "implementation": implementation,
            "variant": changes, "predicted": predicted, "measured": measured,
            "error": relative_error(predicted["step_time_s"], measured["step_time_s"]),
            "memory_error": memory_error(predicted, measured),
            "breakdown": breakdown_rows(predicted, measured),
            "notes": notes, "steps": steps, "warmup": warmup}


def record_line(result: dict) -> str:
    """One JSON line for `--record`: plan, profile, measured, predicted, error and environment."""
    keys = ("plan_file", "plan", "profile", "implementation", "variant", "measured", "predicted", "error", "notes",
            "steps", "warmup", "machine_speed", "memory_error")
    record = {k: result.get(k) for k in keys}
    record["measured"] = {k: val for k, val in result["measured"].items() if k != "environment"}
    record["environment"] = result["measured"]["environment"]
    return json.dumps(record, sort_keys=True)


# ----------------------------------------------------------------------------- suites
def suite_plans(folder: str | Path) -> list[Path]:
    paths = sorted(p for p in Path(folder).iterdir() if p.suffix in (".yml", ".yaml")) if Path(folder).is_dir() else []
    if not paths:
        raise SimkitError("no plan files (*.yml, *.yaml) found", file=str(folder))
    return paths


def suite_summary(results: list[dict]) -> dict:
    """Mean, median and max |error| of the step time over the plans that ran, and per breakdown part the
    mean signed error as a share of the measured step (which part pushes the step prediction off)."""
    ok = [r for r in results if "error" in r]
    if not ok:
        return {"count": 0, "failed": len(results) - len(ok)}
    abs_err = [abs(r["error"]) for r in ok]
    parts = {}
    for row in (row for r in ok for row in r["breakdown"]):
        if row["error_of_step"] is not None:
            parts.setdefault(row["part"], []).append(row["error_of_step"])
    disagreement = sorted(({"part": k, "mean_error_of_step": statistics.fmean(v),
                            "mean_abs_error_of_step": statistics.fmean(abs(x) for x in v)} for k, v in parts.items()),
                          key=lambda d: -d["mean_abs_error_of_step"])
    return {"count": len(ok), "failed": len(results) - len(ok), "mae": statistics.fmean(abs_err),
            "median_ae": statistics.median(abs_err), "max_ae": max(abs_err),
            "mean_error": statistics.fmean(r["error"] for r in ok), "parts": disagreement,
            "speed": _speed_summary(ok), "memory": _memory_summary(ok)}


def _memory_summary(ok: list[dict]) -> dict | None:
    """Mean and max |error| of the predicted allocated memory peak over the plans that measured it."""
    errors = [r["memory_error"] for r in ok if r.get("memory_error") is not None]
    if not errors:
        return None
    return {"count": len(errors), "mae": statistics.fmean(abs(e) for e in errors), "max_ae": max(abs(e) for e in errors),
            "mean_error": statistics.fmean(errors)}


def _speed_summary(ok: list[dict]) -> dict | None:
    """The machine speed factors of the plans that have one, and the errors the step predictions would
    have if divided by them (a diagnostic: how much of the error the machine's state explains)."""
    timed = [r for r in ok if r.get("machine_speed")]
    if not timed:
        return None
    speeds = [r["machine_speed"] for r in timed]
    adjusted = [relative_error(r["predicted"]["step_time_s"] / r["machine_speed"], r["measured"]["step_time_s"])
                for r in timed]
    return {"count": len(timed), "low": min(speeds), "high": max(speeds), "median": statistics.median(speeds),
            "adjusted_mae": statistics.fmean(abs(e) for e in adjusted),
            "adjusted_mean_error": statistics.fmean(adjusted)}

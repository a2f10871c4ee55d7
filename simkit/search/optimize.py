"""`simkit optimize`: the fastest (or cheapest) valid layout of a plan on given hardware.

Every layout of the search space (space.py) is evaluated by the engine the sweep uses (engine.py): for each
combination of the non-numeric choices (ZeRO stage, checkpointing, sequence parallel, precision when
allowed) one plan is loaded and the numeric layouts are simulated in chunks, so memory stays bounded
whatever the size of the space. A layout counts when it is valid and its memory per device leaves the
headroom asked for (default 10 % of the device). The best few are loaded again as ordinary plans and
predicted one by one (the same numbers, now with their breakdown and placement), ranked, and predictions
closer than the model's stated uncertainty (uncertainty.relative_error) are ranked as ties.
"""
from __future__ import annotations

import copy
import itertools
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from simkit import plan as plan_mod
from simkit.core.errors import SimkitError, close_names
from simkit.search import engine
from simkit.search.space import CHOICE_DEFAULTS, DERIVED_KEYS, LAYOUT_KEYS, build_space, layouts

OBJECTIVES = ("time", "cost", "time-to-train")
KEPT_OUTPUTS = ("step_time_s", "tokens_per_s", "total_time_s", "memory_per_device_bytes")
CACHED_CHUNKS = 16          # layouts kept between choices: 16 chunks of 32,768 rows (about 40 MiB) and their prepared blocks
SHOWN_KEYS = LAYOUT_KEYS + DERIVED_KEYS + tuple(CHOICE_DEFAULTS)


@dataclass
class Candidate:
    """One configuration: the plan keys it sets, its prediction and its place in the ranking."""

    settings: dict[str, Any]
    plan: Any
    prediction: Any
    objective: float
    rank: int = 1
    tied: bool = False

    @property
    def devices(self) -> int:
        return self.plan.n_devices

    def main_loss(self) -> tuple[str, float]:
        """The largest of pipeline bubble, exposed communication and recompute, as a share of the step."""
        b, step = self.prediction.breakdown_s, self.prediction.step_time_s
        losses = {"bubble": b["pipeline_bubble"], "exposed comm": b["communication_exposed"],
                  "recompute": b["recompute"]}
        name = max(losses, key=losses.get)
        return name, losses[name] / step


@dataclass
class OptimizeResult:
    objective: str
    devices: int
    headroom: float
    usable_bytes: float                       # device memory a configuration may use
    tie_tolerance: float                      # relative: predictions this close are a tie
    top: list[Candidate]
    as_written: Candidate | None
    as_written_note: str                      # why the plan as written is not ranked, if it is not
    searched: int = 0
    valid: int = 0
    fitting: int = 0
    elapsed_s: float = 0.0
    smallest_memory_bytes: float = math.inf   # the least memory any valid layout needs
    explanation: str = ""
    varied_choices: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- requests
def parse_values(option: str, text: str) -> tuple[str, list[Any]]:
    """'parallelism.zero_stage=1,3' -> ('parallelism.zero_stage', [1, 3]); the key must be a plan key."""
    from simkit.search.sweep import _all_keys

    if "=" not in text:
        raise SimkitError(f"{option} {text!r}: expected KEY=V1,V2,..., e.g. parallelism.zero_stage=1,3")
    key, values = (part.strip() for part in text.split("=", 1))
    if key not in _all_keys():
        raise SimkitError(f"{option} {text!r}: unknown key {key!r}; {close_names(key, _all_keys())}")
    parsed = [plan_mod.parse_yaml(v.strip(), file=option).data for v in values.split(",") if v.strip()]
    if not parsed:
        raise SimkitError(f"{option} {text!r}: no values given")
    return key, parsed


def _allowed(fix, allow) -> dict[str, list]:
    out: dict[str, list] = {}
    for option, texts in (("--allow", allow), ("--fix", fix)):
        for text in texts:
            key, values = parse_values(option, text)
            if option == "--fix" and len(values) != 1:
                raise SimkitError(f"--fix {text!r}: one value (use --allow for several)")
            out[key] = values
    return out


def _nodes(base, devices: int | None, nodes: int | None) -> int:
    per_node = base.hw.devices_per_node
    if devices is not None and nodes is not None:
        raise SimkitError("give --devices or --nodes, not both")
    if devices is not None:
        if devices <= 0 or devices % per_node:
            raise SimkitError(f"--devices {devices} is not a multiple of the {per_node} devices per node "
                              f"of {base.hw.system or base.device.name}; allowed: {per_node}, {2 * per_node}, ...")
        return devices // per_node
    if nodes is not None and nodes <= 0:
        raise SimkitError(f"--nodes {nodes} must be positive")
    return nodes if nodes is not None else base.hw.nodes


# ----------------------------------------------------------------------------- plans of a configuration
def _configured_raw(raw: dict, settings: dict[str, Any]) -> dict:
    """The plan as written with `settings` (plan key -> value) applied; data_parallel and grad_accum_steps
    derived unless set; keys that only apply to other choices dropped (selective policy, fp8 recipe)."""
    out = copy.deepcopy(raw)
    for section in ("model", "training", "parallelism", "hardware"):
        out.setdefault(section, {})
    out["parallelism"]["data_parallel"] = None
    out["training"]["grad_accum_steps"] = None
    for key, value in settings.items():
        section, name = key.split(".", 1)
        out.setdefault(section, {})[name] = value
    t = out["training"]
    if t.get("activation_checkpointing", "none") != "selective":
        t.pop("selective_checkpointing", None)
        t.pop("checkpoint_every_n_layers", None)
    if t.get("precision", "bf16") != "fp8":
        t.pop("fp8_recipe", None)
    return out


def _variant_loader(raw: dict, devices: int | None):
    """variant(assignment) for the engine: the plan with the non-numeric choices set and a neutral layout
    (one device per model, one sequence per device: it loads for any device count); the engine gives every
    numeric layout key per row. `devices` None: the plan's own."""
    neutral = {"parallelism.tensor_parallel": 1, "parallelism.pipeline_parallel": 1,
               "parallelism.context_parallel": 1, "parallelism.virtual_pipeline_stages": 1,
               "training.micro_batch_size": 1, "training.global_batch_size": devices or _devices(raw)}
    return engine.memoized(lambda assignment: plan_mod.load_plan(_configured_raw(raw, {**neutral, **dict(assignment)})))


def _devices(raw: dict) -> int:
    """The devices of a plan as written (for the neutral layout that loads it)."""
    hw = raw.get("hardware") or {}
    nodes = hw.get("nodes", 1)
    per_node = hw.get("devices_per_node")
    if per_node is None and hw.get("system"):
        from simkit import hardware

        per_node = hardware.load_system(hw["system"]).devices_per_node
    total = (per_node or 1) * nodes
    return total if isinstance(total, int) and total > 0 else 1


def _objective(kind: str, step, tokens_per_s, total, devices, has_data: bool):
    """Smaller is better: seconds per token (time), device-seconds to train or per token (cost), seconds to
    train (time-to-train)."""
    if kind == "time":
        return 1.0 / tokens_per_s
    if kind == "time-to-train":
        return total
    return devices * (total if has_data else 1.0 / tokens_per_s)


# ----------------------------------------------------------------------------- the search
def optimize(plan, *, devices: int | None = None, nodes: int | None = None, objective: str = "time",
             top: int = 10, fix=(), allow=(), headroom: float = 0.10, overrides=()) -> OptimizeResult:
    """Search every valid layout of `plan` (a path, mapping or Plan) on `devices` (or `nodes`) and return
    the `top` best by `objective` that fit in memory with `headroom` (a fraction of device memory) to spare."""
    t0 = time.perf_counter()
    if objective not in OBJECTIVES:
        raise SimkitError(f"--objective {objective!r}; allowed: {', '.join(OBJECTIVES)}")
    if not 0 <= headroom < 1:
        raise SimkitError(f"--headroom {headroom}: a fraction of device memory in [0, 1), e.g. 0.1")
    raw = plan_mod.read_raw(plan, overrides)
    base = _variant_loader(raw, None)(())           # the model, hardware and data, on a neutral layout
    has_data = base.tokens_per_epoch is not None
    if objective == "time-to-train" and not has_data:
        raise SimkitError("--objective time-to-train needs the plan's data.tokens or data.samples")
    n_nodes = _nodes(base, devices, nodes)
    raw.setdefault("hardware", {})["nodes"] = n_nodes
    allowed = _allowed(fix, allow)
    allowed.setdefault("hardware.nodes", [n_nodes])
    allowed.setdefault("training.global_batch_size", [raw.get("training", {}).get("global_batch_size")])
    space_plan = _plan_for_space(base, n_nodes)
    space = build_space(space_plan, allowed)
    usable = (1.0 - headroom) * base.device.memory_bytes
    result = OptimizeResult(objective, space_plan.n_devices, headroom, usable, _tie_tolerance(base.device), [], None,
                            "", varied_choices=[k for k, v in space.choices.items() if len(v) > 1])
    best = _search(raw, space, space_plan, usable, has_data, max(top, 1) * 4, result)
    _check_found(result, base)
    result.top = _rank(_load_candidates(raw, best, objective, has_data, usable, top), result.tie_tolerance)
    result.as_written, result.as_written_note = _as_written(raw, base, objective, has_data, usable)
    result.explanation = explain(result)
    result.elapsed_s = time.perf_counter() - t0
    return result


def _check_found(result: OptimizeResult, base) -> None:
    """One sentence when nothing can run: no valid layout, or none that fits (with the least it needs)."""
    where = f"{result.devices} x {base.device.name}"
    if result.valid == 0:
        raise SimkitError(f"no valid layout of this model on {where}: no tensor x pipeline x context parallel size "
                          "divides the devices, heads, layers and sequence with a data-parallel size that divides "
                          "the global batch (or --fix/--allow exclude them all)")
    if result.fitting == 0:
        raise SimkitError(f"no layout fits on {where}: the smallest needs {result.smallest_memory_bytes / 2**30:.1f} GiB "
                          f"per device, {result.usable_bytes / 2**30:.1f} GiB are usable ({result.headroom * 100:.0f} % "
                          "headroom kept); add devices, lower --headroom or allow other values")


def _plan_for_space(base, n_nodes):
    """The plan whose model, batch and devices the space is built from."""
    import dataclasses

    hw = dataclasses.replace(base.spec.hardware, nodes=n_nodes)
    return dataclasses.replace(base, spec=dataclasses.replace(base.spec, hardware=hw))


def _tie_tolerance(device) -> float:
    from simkit.model.uncertainty import relative_error

    return relative_error(device)


def _search(raw, space, space_plan, usable, has_data, keep, result) -> list[tuple[float, dict]]:
    """Evaluate every configuration; returns the best `keep` (objective, settings) that fit. Layouts that
    cannot fit are never timed (their memory is computed first)."""
    variant = _variant_loader(raw, space_plan.n_devices)
    keys = list(space.choices)
    kept: list[tuple[float, dict]] = []
    per_node = space_plan.hw.devices_per_node
    cached: list | None = None         # the layouts are the same for every choice: kept when they are few
    prepared: dict[tuple, engine.Prepared] = {}    # per cached chunk, SP filter and plan numbers
    for combo in itertools.product(*(space.choices[k] for k in keys)):
        assignment = tuple(zip(keys, combo))
        try:
            base = variant(assignment)
        except SimkitError:
            base = None
        sp_off = dict(assignment).get("parallelism.sequence_parallel") is False
        fresh = [] if cached is None else None
        for number, chunk in enumerate(cached if cached is not None else layouts(space_plan, space)):
            if fresh is not None and len(fresh) < CACHED_CHUNKS:
                fresh.append(chunk)
            if sp_off:
                chunk = _select(chunk, chunk["parallelism.tensor_parallel"] > 1)   # SP only means something with TP
            n = len(chunk["parallelism.tensor_parallel"])
            if n == 0:
                continue
            result.searched += n
            if base is None:
                continue
            key = (number, sp_off, engine.signature(base)) if number < CACHED_CHUNKS else None
            prep = prepared.get(key) if key is not None else None
            if prep is None:
                prep = engine.prepare(base, chunk, n)
                if key is not None:
                    prepared[key] = prep
            r = {k: np.full(n, np.nan) for k in KEPT_OUTPUTS}
            engine.run(base, prep, r, slice(None), KEPT_OUTPUTS, memory_limit=usable)
            ok = prep.ok
            result.valid += int(ok.sum())
            if ok.any():
                result.smallest_memory_bytes = min(result.smallest_memory_bytes,
                                                   float(np.min(r["memory_per_device_bytes"][ok])))
            fits = ok & (r["memory_per_device_bytes"] <= usable)
            result.fitting += int(fits.sum())
            if not fits.any():
                continue
            devices = chunk["hardware.nodes"] * per_node
            score = _objective(result.objective, r["step_time_s"], r["tokens_per_s"], r["total_time_s"], devices,
                               has_data)
            rows = np.flatnonzero(fits)
            if len(rows) > keep:
                rows = rows[np.argpartition(score[rows], keep)[:keep]]
            for i in rows:
                settings = {k: _plain(v[i]) for k, v in chunk.items()}
                settings.update(dict(assignment))
                kept.append((float(score[i]), settings))
            if len(kept) > 4 * keep:
                kept = sorted(kept, key=lambda x: x[0])[:keep]
        if fresh is not None and len(fresh) < CACHED_CHUNKS:
            cached = fresh
    return sorted(kept, key=lambda x: x[0])[:keep]


def _select(chunk: dict, mask: np.ndarray) -> dict:
    return {k: v[mask] for k, v in chunk.items()}


def _plain(x):
    x = float(x)
    return int(x) if x == int(x) else x


def _load_candidates(raw, best, objective, has_data, usable, top: int) -> list[Candidate]:
    """The first `top` of the best settings as ordinary plans, predicted one by one (each still valid and
    fitting, and not a repeat of a simpler one)."""
    from simkit.model.step import predict

    out: list[Candidate] = []
    for _, settings in sorted(best, key=lambda b: (b[0], _complexity(b[1]))):
        if len(out) == top:
            break
        plan = plan_mod.load_plan(_configured_raw(raw, {k: v for k, v in settings.items() if k not in DERIVED_KEYS}))
        pred = predict(plan)
        if pred.memory_per_device_bytes > usable:      # the engine and predict agree; belt and braces
            continue
        score = _score(objective, plan, pred, has_data)
        if any(_same(score, c.objective) and _same(pred.memory_per_device_bytes, c.prediction.memory_per_device_bytes)
               for c in out):
            continue        # the model predicts the same as a simpler configuration already listed
        out.append(Candidate(settings, plan, pred, score))
    return out


def _same(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-12 * max(abs(a), abs(b))


def _complexity(settings: dict) -> tuple:
    """Among configurations the model cannot tell apart, the simpler first: less recompute and sharding,
    fewer virtual stages, sequence parallel on (it costs nothing where TP is 1)."""
    g = settings.get
    return (("none", "selective", "full").index(g("training.activation_checkpointing", "none")),
            g("parallelism.zero_stage", 0), g("parallelism.virtual_pipeline_stages", 1),
            not g("parallelism.sequence_parallel", True))


def _score(objective, plan, pred, has_data) -> float:
    return float(_objective(objective, pred.step_time_s, pred.tokens_per_s, pred.total_time_s or math.nan,
                            plan.n_devices, has_data))


def _rank(candidates: list[Candidate], tolerance: float) -> list[Candidate]:
    """Competition ranking where a candidate within `tolerance` of its group's leader shares its rank."""
    leader = None
    for i, c in enumerate(candidates):
        if leader is not None and c.objective <= leader.objective * (1 + tolerance):
            c.rank, c.tied, leader.tied = leader.rank, True, True
        else:
            c.rank, leader = i + 1, c
    return candidates


def _as_written(raw, base, objective, has_data, usable) -> tuple[Candidate | None, str]:
    """The plan's own layout on the searched devices (data_parallel and accumulation re-derived when the
    device count changed), or why it cannot run there."""
    from simkit.model.step import predict

    plan, error = None, ""
    for derived in ({}, {"parallelism.data_parallel": None, "training.grad_accum_steps": None}):
        try:
            plan = plan_mod.load_plan(_written(raw, derived))
            break
        except SimkitError as exc:
            error = error or exc.message
    if plan is None:
        return None, f"the plan's own layout does not run on these devices: {error}"
    p, t = plan.parallelism, plan.training
    settings = {"parallelism.tensor_parallel": p.tensor_parallel, "parallelism.pipeline_parallel": p.pipeline_parallel,
                "parallelism.context_parallel": p.context_parallel,
                "parallelism.virtual_pipeline_stages": p.virtual_pipeline_stages,
                "training.micro_batch_size": t.micro_batch_size, "parallelism.zero_stage": p.zero_stage,
                "training.activation_checkpointing": t.activation_checkpointing,
                "parallelism.sequence_parallel": p.sequence_parallel,
                "parallelism.data_parallel": p.data_parallel, "training.grad_accum_steps": t.grad_accum_steps}
    pred = predict(plan)
    cand = Candidate(settings, plan, pred, _score(objective, plan, pred, has_data))
    if pred.memory_per_device_bytes > usable:
        return cand, (f"it needs {pred.memory_per_device_bytes / 2**30:.1f} GiB per device, more than the "
                      f"{usable / 2**30:.1f} GiB allowed")
    return cand, ""


def _written(raw: dict, settings: dict) -> dict:
    out = copy.deepcopy(raw)
    for key, value in settings.items():
        section, name = key.split(".", 1)
        out.setdefault(section, {})[name] = value
    return out


# ----------------------------------------------------------------------------- the explanation
def label(settings: dict) -> str:
    """TP 4 (SP) x PP 4 (v 5) x CP 2 x DP 2, micro-batch 1 x 64, ZeRO 1, checkpointing none."""
    g = settings.get
    tp = f"TP {g('parallelism.tensor_parallel')}" + (" (SP)" if g("parallelism.tensor_parallel", 1) > 1 and
                                                     g("parallelism.sequence_parallel") else "")
    pp = f"PP {g('parallelism.pipeline_parallel')}" + (f" (v {g('parallelism.virtual_pipeline_stages')})"
                                                       if g("parallelism.virtual_pipeline_stages", 1) > 1 else "")
    return (f"{tp} x {pp} x CP {g('parallelism.context_parallel')} x DP {g('parallelism.data_parallel')}, "
            f"micro-batch {g('training.micro_batch_size')} x {g('training.grad_accum_steps')}, "
            f"ZeRO {g('parallelism.zero_stage')}, checkpointing {g('training.activation_checkpointing')}"
            + "".join(f", {k.split('.')[1]} {v}" for k, v in settings.items()
                      if k not in SHOWN_KEYS and k not in ("hardware.nodes", "training.global_batch_size")))


_PARTS = (("compute", ("forward", "backward")), ("recompute", ("recompute",)), ("pipeline bubble", ("pipeline_bubble",)),
          ("optimizer step", ("optimizer",)), ("kernel launches", ("other",)))
_COMM = {"tensor": "exposed tensor-parallel communication", "context": "exposed context-parallel K/V ring",
         "pipeline": "exposed pipeline sends", "data": "exposed data-parallel communication"}


def _per_token(c: Candidate) -> dict[str, float]:
    """Seconds per token of each part of the step (comparable across global batches)."""
    pred = c.prediction
    tokens = pred.tokens_per_s * pred.step_time_s
    parts = {name: sum(pred.breakdown_s[k] for k in keys) / tokens for name, keys in _PARTS}
    parts.update({_COMM[k]: v["exposed"] / tokens for k, v in pred.communication_s.items()})
    return parts


def _why(winner: Candidate, other: Candidate) -> str:
    """'+18 % exposed tensor-parallel communication (its tensor-parallel group of 16 spans 2 nodes), ...'."""
    mine, theirs = _per_token(winner), _per_token(other)
    base = sum(mine.values()) or 1.0
    deltas = sorted(((theirs[k] - mine[k]) / base, k) for k in mine)
    worse = [(d, k) for d, k in reversed(deltas) if d > 0.005][:2]
    better = [f"{d * 100:.0f} % {k}" for d, k in deltas if d < -0.005][:1]
    parts = []
    for d, k in worse:
        group = _GROUP_OF.get(k)
        notes = [n for n in other.prediction.placement if group and group in n and n not in winner.prediction.placement]
        parts.append(f"+{d * 100:.0f} % {k}" + (f" ({notes[0].replace('each ', 'its ', 1)})" if notes else ""))
    text = ", ".join(parts) if parts else "no part of the step more"
    return text + (f", against {better[0]}" if better else "")


_GROUP_OF = {_COMM["tensor"]: "tensor-parallel", _COMM["context"]: "context-parallel", _COMM["pipeline"]: "pipeline",
             _COMM["data"]: "data-parallel"}


def explain(result: OptimizeResult) -> str:
    """One paragraph: why the winner wins over the runner-up and over the plan as written."""
    if not result.top:
        return ""
    win = result.top[0]
    what = {"time": "faster", "time-to-train": "faster to train", "cost": "cheaper"}[result.objective]
    out = [f"The best layout is {label(win.settings)}."]
    if len(result.top) > 1:
        up = result.top[1]
        gap = up.objective / win.objective - 1
        tie = (f" - a tie within the model's {result.tie_tolerance * 100:.0f} % uncertainty" if up.rank == win.rank
               else "")
        out.append(f"It is {gap * 100:.1f} % {what} than the runner-up, {label(up.settings)}{tie}: the runner-up "
                   f"spends {_why(win, up)}.")
    mine = result.as_written
    if mine is None:
        out.append(result.as_written_note[0].upper() + result.as_written_note[1:] + ".")
    elif result.as_written_note:
        out.append(f"The plan as written ({label(mine.settings)}) does not fit: {result.as_written_note}.")
    else:
        gap = mine.objective / win.objective - 1
        if abs(gap) < 1e-9:
            out.append("It is the plan as written.")
        else:
            out.append(f"Against the plan as written ({label(mine.settings)}) it is {gap * 100:.1f} % {what}: the plan "
                       f"spends {_why(win, mine)}.")
    return " ".join(out)

"""The HTML report of a plan: one self-contained page (images embedded as PNG data, styles inline, no
script, no network) that a user can mail or attach to a proposal. `report_page(inputs)` builds the text
from what the CLI gathered (`ReportInputs`); nothing here reads files, predicts or prints."""
from __future__ import annotations

import base64
import dataclasses
import html
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import yaml

from simkit.core.units import human_bytes, human_count, human_duration
from simkit.report.plot_step import step_parts

STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color: #1d1d1f; background: #fff; max-width: 1100px; margin: 2em auto; padding: 0 1.2em; }
h1 { font-size: 1.7em; margin-bottom: .1em; } h2 { margin-top: 2em; border-bottom: 2px solid #e5e5ea; }
.meta { color: #6e6e73; margin-top: 0; }
.facts { display: grid; grid-template-columns: repeat(auto-fit, minmax(200px, 1fr)); gap: .8em; margin: 1.2em 0; }
.fact { background: #f5f5f7; border-radius: 8px; padding: .7em 1em; }
.fact b { display: block; font-size: 1.35em; } .fact span { color: #6e6e73; font-size: .85em; }
table { border-collapse: collapse; margin: .8em 0; font-size: .9em; }
th, td { text-align: left; padding: .25em .9em .25em 0; border-bottom: 1px solid #e5e5ea; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; height: auto; display: block; margin: 1em 0; }
pre { background: #f5f5f7; padding: .8em 1em; border-radius: 6px; overflow-x: auto; font-size: .85em; }
.warn { color: #b3261e; } .note { color: #6e6e73; font-size: .9em; } summary { cursor: pointer; color: #0066cc; }
"""


@dataclass(kw_only=True)
class ReportInputs:
    """Everything the page shows; the CLI fills it in."""

    plan: Any                        # simkit.plan.Plan
    prediction: Any                  # simkit.model.step.Prediction
    plan_file: str
    plan_text: str                   # the plan file as written
    overrides: Sequence[str] = ()
    images: dict[str, bytes] = field(default_factory=dict)   # breakdown, memory, scaling, hardware: PNG bytes
    scaling_rows: list[dict] = field(default_factory=list)    # search.scaling.scaling_table records
    scaling_note: str = ""
    accuracy: dict = field(default_factory=dict)              # {kind, mape, source} from presets/model_error.yaml
    commands: list[str] = field(default_factory=list)
    profile_text: str | None = None  # the calibrated profile's file, when the plan uses one
    version: str = ""
    generated_utc: str = ""


def report_page(r: ReportInputs) -> str:
    name = html.escape(r.plan_file.rsplit("/", 1)[-1])
    body = [f"<h1>Training plan: {name}</h1>",
            f'<p class="meta">{_e(_headline(r.plan))}<br>predicted by simkit {_e(r.version)} on '
            f"{_e(r.generated_utc)} UTC from <code>{_e(r.plan_file)}</code>"
            + (" with " + ", ".join(f"<code>--set {_e(o)}</code>" for o in r.overrides) if r.overrides else "")
            + "</p>",
            _prediction(r), _breakdown(r), _memory(r), _scaling(r), _hardware(r), _accuracy(r), _plan(r),
            _reproduce(r)]
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>simkit report: {name}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
            + "\n".join(b for b in body if b) + "\n</body>\n</html>\n")


# ----------------------------------------------------------------------------- sections
def _headline(plan) -> str:
    m = plan.model
    return (f"{m.n_layers} layers, d_model {m.d_model}, seq_len {m.seq_len} on {plan.n_devices} x {plan.device.name} "
            f"({plan.hw.devices_per_node} per node x {plan.hw.nodes} node{'s' * (plan.hw.nodes > 1)}), "
            f"{plan.training.precision}")


def _prediction(r: ReportInputs) -> str:
    p = r.prediction
    lo, hi = p.step_time_interval_s
    facts = [("step time", human_duration(p.step_time_s), f"likely {human_duration(lo)} to {human_duration(hi)}"),
             ("throughput", f"{p.tokens_per_s:,.0f} tokens/s", f"{p.samples_per_s:,.1f} samples/s"),
             ("MFU", f"{100 * p.mfu:.1f} %", f"of dense {r.plan.training.precision} peak"),
             ("memory per device", human_bytes(p.memory_per_device_bytes),
              f"of {human_bytes(p.memory_capacity_bytes)}: " + ("fits" if p.fits_in_memory else "DOES NOT FIT"))]
    if p.total_time_s is not None:
        facts.append(("time to train", human_duration(p.total_time_s),
                      f"{p.iterations_per_epoch:,} steps per epoch" if p.iterations_per_epoch else ""))
    if p.device_hours is not None:
        facts.append(("device-hours", f"{p.device_hours:,.0f}", f"${p.cost_usd:,.0f}" if p.cost_usd else ""))
    cards = "".join(f'<div class="fact"><span>{_e(k)}</span><b>{_e(v)}</b><span>{_e(note)}</span></div>'
                    for k, v, note in facts)
    warnings = "".join(f'<p class="warn">warning: {_e(w)}</p>' for w in p.warnings)
    return (f'<h2 id="prediction">Prediction</h2>\n<div class="facts">{cards}</div>{warnings}\n'
            f'<p class="note">{human_count(p.parameters)} parameters; the interval is where the measured step time '
            "of held-out runs fell around the prediction on this kind of hardware profile (below), widened by the "
            "spread of the calibration.</p>")


def _breakdown(r: ReportInputs) -> str:
    p, step = r.prediction, r.prediction.step_time_s
    parts = {k: p.breakdown_s.get(k, 0.0) for k in step_parts()}
    rows = [[k.replace("_", " "), _num(v, "s"), f"{100 * v / step:.1f} %" if step else "-"] for k, v in parts.items()]
    rows.append(["communication total (incl. hidden)", _num(p.breakdown_s.get("communication_total", 0.0), "s"), ""])
    comm = [[kind, _num(t["exposed"], "s"), _num(t["total"], "s")] for kind, t in p.communication_s.items()
            if t["total"] > 0]
    out = ['<h2 id="breakdown">Where the step time goes</h2>', _img(r.images.get("breakdown"), "step time breakdown"),
           _table(["part", "seconds per step", "share of the step"], rows, right={1, 2})]
    if comm:
        out += ["<p>Communication by parallel dimension (exposed: not hidden behind compute):</p>",
                _table(["kind", "exposed", "total"], comm, right={1, 2})]
    return "\n".join(out)


def _memory(r: ReportInputs) -> str:
    p = r.prediction
    rows = [[k.replace("_", " "), human_bytes(v)] for k, v in p.memory_breakdown_bytes.items()]
    rows.append(["total", human_bytes(p.memory_per_device_bytes)])
    return "\n".join(['<h2 id="memory">Memory per device</h2>', _img(r.images.get("memory"), "memory per device"),
                      _table(["kind", "bytes"], rows, right={1})])


def _scaling(r: ReportInputs) -> str:
    out = ['<h2 id="scaling">Scaling over node counts</h2>']
    if r.scaling_note:
        out.append(f"<p>{_e(r.scaling_note)}</p>")
    if r.scaling_rows:
        out.append(_img(r.images.get("scaling"), "throughput and scaling efficiency against devices"))
        rows = [[str(row["nodes"]), str(row["devices"]), _count(row["global_batch_size"]), _count(row["tokens_per_s"]),
                 _num(row["step_time_s"], "s"), _pct(row["scaling_efficiency"]),
                 row["reason"] or ("yes" if row["fits_in_memory"] else "does not fit in memory")]
                for row in r.scaling_rows]
        out.append(_table(["nodes", "devices", "global batch", "tokens/s", "step", "efficiency", "valid"], rows,
                          right={0, 1, 2, 3, 4, 5}))
    return "\n".join(out)


def _hardware(r: ReportInputs) -> str:
    plan, d = r.plan, r.plan.device
    rows = [["memory", human_bytes(d.memory_bytes), d.sources.get("memory_gib", "")],
            ["memory bandwidth", f"{d.memory_bandwidth_bytes_per_s / 1e9:,.4g} GB/s",
             d.sources.get("memory_bandwidth_gb_per_s", "")]]
    rows += [[f"peak {dtype} (dense)", f"{peak / 1e12:,.4g} TFLOP/s", d.sources.get(f"peak_tflops.{dtype}", "")]
             for dtype, peak in d.peak_flop_per_s.items()]
    rows += [[f"matmul efficiency {k}", f"{v:.3g}", d.sources.get(f"matmul_efficiency.{k}", "")]
             for k, v in d.matmul_efficiency.items()]
    for role, link in (("intra-node", plan.intra_node), ("inter-node", plan.inter_node)):
        if link is not None:
            rows.append([f"{role} link: {link.name}", f"{link.bandwidth_bytes_per_s / 1e9:,.4g} GB/s per direction, "
                         f"{link.latency_s * 1e6:.3g} us", link.sources.get("bandwidth_gb_per_s", "")])
    kind = "calibrated profile" if d.calibration is not None else "catalogue entry"
    out = ['<h2 id="hardware">Hardware</h2>',
           f"<p><b>{_e(d.name)}</b> ({kind}): {_e(d.description)}"
           + (f"<br><span class=\"note\">file: {_e(d.path)}</span>" if d.path else "") + "</p>",
           _table(["value", "", "source"], rows, right={1})]
    if d.calibration is not None:
        env = ", ".join(f"{k} {v}" for k, v in d.calibration.environment.items() if v is not None)
        out += [f"<p>Measured by <code>simkit calibrate</code> on {_e(d.calibration.date)}: {_e(env)}.</p>",
                _img(r.images.get("hardware"), "what the calibration measured")]
    return "\n".join(out)


def _accuracy(r: ReportInputs) -> str:
    a = r.accuracy
    if not a:
        return ""
    kind = {"calibrated": "calibrated profiles", "fitted": "profiles fitted to the user's own runs"}.get(
        a["kind"], "catalogue (datasheet) hardware")
    if "low" in a:
        cover = 100 * float(a.get("coverage", 0.8))
        lo, hi = (100 * (math.exp(float(a[k])) - 1) for k in ("low", "high"))
        claim = (f"the measured step time of {cover:.0f} % of held-out runs lay between <b>{lo:+.1f} %</b> and "
                 f"<b>{hi:+.1f} %</b> of the prediction")
    else:
        claim = (f"simkit's predicted step time has been off by <b>{100 * float(a['mape']):.1f} %</b> on average "
                 "(mean absolute percentage error)")
    return ('<h2 id="accuracy">How accurate is this?</h2>\n'
            f"<p>On {kind}, {claim} where it was checked against measurements:</p>\n"
            f"<p class=\"note\">{_e(a['source'])}</p>")


def _plan(r: ReportInputs) -> str:
    resolved = yaml.safe_dump(_plain(dataclasses.asdict(r.plan.spec)), sort_keys=False, width=100)
    return "\n".join(['<h2 id="plan">The plan</h2>', f"<p><code>{_e(r.plan_file)}</code> as written:</p>",
                      f"<pre>{_e(r.plan_text)}</pre>",
                      "<details><summary>as simkit read it, every derived value filled in"
                      + (" and the --set overrides applied" if r.overrides else "") + "</summary>"
                      f"<pre>{_e(resolved)}</pre></details>"])


def _reproduce(r: ReportInputs) -> str:
    out = ['<h2 id="reproduce">Reproduce</h2>',
           f"<p>With simkit {_e(r.version)}, the plan above saved as <code>{_e(r.plan_file)}</code>"
           + (" and the calibrated profile below at its path" if r.profile_text else "") + ":</p>",
           "<pre>" + "\n".join(_e(c) for c in r.commands) + "</pre>"]
    if r.profile_text:
        out.append(f"<details><summary>the calibrated profile {_e(r.plan.device.path)}</summary>"
                   f"<pre>{_e(r.profile_text)}</pre></details>")
    return "\n".join(out)


# ----------------------------------------------------------------------------- pieces
def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _img(png: bytes | None, alt: str) -> str:
    if not png:
        return ""
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


def _table(headers: list[str], rows: list[list[str]], right: set[int] = frozenset()) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f'<td{" class=num" if i in right else ""}>{_e(c)}</td>' for i, c in enumerate(row))
                   + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _num(seconds: float | None, unit: str) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    if seconds == 0:
        return "0"
    return human_duration(seconds) if unit == "s" else f"{seconds:.4g} {unit}"


def _count(x) -> str:
    return "-" if x is None or x != x else f"{x:,.0f}"


def _pct(x) -> str:
    return "-" if x is None or x != x else f"{100 * x:.1f} %"


def _plain(value):
    """Plan values as YAML-safe built-ins (tuples to lists, numpy scalars to numbers)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item"):
        return value.item()
    return value

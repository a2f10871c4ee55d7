"""The `simkit` command. Subcommands live in sibling modules and are imported only when used, so
`simkit predict` never pays for torch, pandas or matplotlib."""
from __future__ import annotations

import importlib
import sys

import click

from simkit import __version__
from simkit.core.errors import SimkitError

_COMMANDS = {
    "predict": ("simkit.cli.predict", "predict_cmd", "Predict step, epoch and total time and memory of a plan."),
    "sweep": ("simkit.cli.predict", "sweep_cmd", "Predict every combination of varied plan keys into a CSV."),
    "optimize": ("simkit.cli.optimize", "optimize_cmd", "The fastest (or cheapest) valid layout of a plan on given hardware."),
    "estimate": ("simkit.cli.predict", "estimate_cmd", "Quick 6*N*D compute estimate of a training run."),
    "hardware": ("simkit.cli.hardware", "hardware_cmd", "List and show the catalogue; plot a calibrated profile."),
    "calibrate": ("simkit.cli.calibrate", "calibrate_cmd", "Measure this machine and write a calibrated profile."),
    "fit": ("simkit.cli.fit", "fit_cmd", "Fit the model's free parameters to measured runs; write a profile overlay."),
    "validate": ("simkit.cli.validate", "validate_cmd", "Compare predictions with real training runs or published data."),
    "history": ("simkit.cli.history", "history_cmd", "Calibration history: list, show, compare, check, plot."),
    "plot": ("simkit.cli.plot", "plot_cmd", "Draw step breakdown, memory, scaling or accuracy as PNG/SVG."),
    "report": ("simkit.cli.report", "report_cmd", "Write one self-contained HTML page about a plan."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return list(_COMMANDS)

    def get_command(self, ctx, name):
        if name not in _COMMANDS:
            return None
        module, attr, _ = _COMMANDS[name]
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx, formatter):
        rows = [(name, help_) for name, (_, _, help_) in _COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except SimkitError as exc:
            if ctx.params.get("debug"):
                raise
            echo_error(exc)
            ctx.exit(2)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="simkit")
@click.option("--debug", is_flag=True, help="Show a traceback for errors.")
def cli(debug: bool) -> None:
    """simkit: how long will this training run take on that hardware, does it fit, and what is the
    fastest way to run it?"""


def echo_error(exc: SimkitError) -> None:
    """Every problem on its own line (`error: FILE:LINE: KEY: message`), at most MAX_SHOWN of them."""
    for line in exc.lines():
        click.echo(f"error: {line}", err=True)


def main() -> None:
    try:
        cli.main(standalone_mode=True)
    except SimkitError as exc:  # raised outside a command's invoke, or re-raised under --debug
        if "--debug" in sys.argv[1:]:
            raise
        echo_error(exc)
        sys.exit(2)

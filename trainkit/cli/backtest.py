"""``trainkit backtest``: a model over a test window against buy-and-hold — a thin command over
:func:`trainkit.backtest.run_backtest` (logged as a run in ``trainkit-backtests``)."""

from __future__ import annotations

import click

from trainkit import settings as env_settings
from trainkit.cli.group import Settings
from trainkit.cli.options import DATA_SOURCE, DATE, MODEL_URI
from trainkit.cli.output import emit_json, print_backtest, stdout_for

__all__ = ["backtest"]


@click.command(short_help="Backtest a model over a window, against buy-and-hold.")
@click.option("--model-uri", type=MODEL_URI, required=True, metavar="URI",
              help="runs:/<run_id>/model, models:/m-<id>, models:/<name>/<version> or models:/<name>@<alias>.")
@click.option("--start", type=DATE, required=True, metavar="DATE", help="First day of the test window.")
@click.option("--end", type=DATE, required=True, metavar="DATE", help="Last day of the test window.")
@click.option("--data-source", type=DATA_SOURCE, default=None, metavar="yfinance|synthetic|csv:PATH",
              help="Prices to test on [default: the source the model was trained on].")
@click.option("--no-log", is_flag=True,
              help="Compute and print only: record no run (and read no cached one). Needs only READ on a team server.")
@click.option("--json", "json_mode", is_flag=True, help="Print one JSON document on stdout.")
@click.pass_obj
def backtest(settings: Settings, model_uri: str, start: str, end: str, data_source: str | None, no_log: bool,
             json_mode: bool) -> None:
    """Run a model over a test window: metrics vs buy-and-hold, logged as a run in the
    trainkit-backtests experiment that points back at the training run (unless --no-log)."""
    if start >= end:
        raise click.BadParameter(f"--start {start} must be before --end {end}", param_hint="'--start'")
    with stdout_for(json_mode) as out:
        from trainkit.backtest import run_backtest

        result = run_backtest(model_uri, start, end, data_source=data_source, tracking_uri=settings.tracking_uri,
                              log=not no_log)
        project_run_id = env_settings.MLFLOW_RUN_ID.get()
        if project_run_id and result.run_id:  # under `mlflow run -e backtest`: say where the result is
            settings.manager().note_backtest(project_run_id, result)
        if json_mode:
            emit_json(out, result.to_dict())
            return
        print_backtest(out, model_uri, start, end, result)

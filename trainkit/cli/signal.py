"""``trainkit signal``: the position a model holds after a day's close, from the command line
(a thin command over :func:`trainkit.signals.signal_for_day`).

The model brings everything but the prices (its symbol, data source, feature spec, *training*
scaler and ``allow_short``); the prices come from its data source (or ``--data-source``). The
policy is walked exactly as :func:`trainkit.backtest.run_backtest` walks it — the same code the
served model runs (:func:`trainkit.signals_core.signals`) — so:

* by default the walk starts flat on the first trading day after the model's training window
  (or on its first day, when ``--date`` falls inside it), and the answer for ``--date D`` is the
  last position of ``trainkit backtest --start <that day> --end D``;
* ``--since S`` starts the flat walk on ``S`` instead;
* ``--position P`` says which position you hold coming into ``D``: one step of the policy from it.
"""

from __future__ import annotations

import click

from trainkit.cli.group import Settings
from trainkit.cli.options import DATA_SOURCE, DATE, MODEL_URI
from trainkit.cli.output import emit_json, print_signal, stdout_for
from trainkit.signals import signal_for_day

__all__ = ["signal", "signal_for_day"]


@click.command("signal", short_help="The position a model holds after a day's close.")
@click.option("--model-uri", type=MODEL_URI, required=True, metavar="URI",
              help="runs:/<run_id>/model, models:/m-<id>, models:/<name>/<version> or models:/<name>@<alias>.")
@click.option("--data-source", type=DATA_SOURCE, default=None, metavar="yfinance|synthetic|csv:PATH",
              help="Prices to read [default: the source the model was trained on].")
@click.option("--date", "day", type=DATE, default=None, metavar="DATE",
              help="The day whose close the position is decided on [default: the last available day].")
@click.option("--position", type=click.IntRange(-1, 1), default=None, metavar="-1|0|1",
              help="The position you hold coming into DATE: one step of the policy from it.")
@click.option("--since", type=DATE, default=None, metavar="DATE",
              help="Without --position: walk the policy from flat from this day, as a backtest from it does "
                   "[default: the first day after the training window].")
@click.option("--no-fallback", is_flag=True, help="Fail instead of using synthetic prices when Yahoo does not answer.")
@click.option("--json", "json_mode", is_flag=True, help="Print one JSON document on stdout.")
@click.pass_obj
def signal(settings: Settings, model_uri: str, data_source: str | None, day: str | None, position: int | None,
           since: str | None, no_fallback: bool, json_mode: bool) -> None:
    """Print the target position (-1 short, 0 flat, +1 long) the model holds from a day's close
    to the next: the policy walked through the model's prices exactly as `trainkit backtest`
    walks it, with the model's features and training scaler."""
    if position is not None and since is not None:
        raise click.UsageError("--position and --since exclude each other: --position is one step from the position "
                               "you hold, --since a walk from flat")
    with stdout_for(json_mode) as out:
        doc = signal_for_day(model_uri, day, data_source=data_source, position=position, since=since,
                             no_fallback=no_fallback, tracking_uri=settings.tracking_uri)
        if json_mode:
            emit_json(out, doc)
            return
        print_signal(out, doc, one_step=position is not None)

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

Registered on the ``trainkit`` group when this module is imported (``trainkit/cli/app.py``
imports it at its end).
"""

from __future__ import annotations

import logging

import click

from trainkit.cli.app import (
    Settings,
    cli,
    data_source_callback,
    date_callback,
    emit_json,
    model_uri_callback,
    stdout_for,
)

__all__ = ["signal", "signal_for_day"]

from trainkit.signals import signal_for_day  # noqa: E402  (the library function this command prints)

_logger = logging.getLogger("trainkit")

_NAMES = {-1: "short", 0: "flat", 1: "long"}


def _pos(p: int) -> str:
    return f"{p:+d} ({_NAMES[p]})" if p else "0 (flat)"


@cli.command("signal", short_help="The position a model holds after a day's close.")
@click.option("--model-uri", required=True, callback=model_uri_callback, metavar="URI",
              help="runs:/<run_id>/model, models:/m-<id>, models:/<name>/<version> or models:/<name>@<alias>.")
@click.option("--data-source", default=None, callback=data_source_callback, metavar="yfinance|synthetic|csv:PATH",
              help="Prices to read [default: the source the model was trained on].")
@click.option("--date", "day", default=None, callback=date_callback, metavar="DATE",
              help="The day whose close the position is decided on [default: the last available day].")
@click.option("--position", type=click.IntRange(-1, 1), default=None, metavar="-1|0|1",
              help="The position you hold coming into DATE: one step of the policy from it.")
@click.option("--since", default=None, callback=date_callback, metavar="DATE",
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
        source = doc["data_source_effective"]
        if source != doc["data_source"]:
            source += f" (FALLBACK from {doc['data_source']})"
        out.write(f"{doc['symbol']} {doc['date']}: target position {_pos(doc['position'])}, "
                  f"held before {_pos(doc['previous_position'])}\n")
        how = (f"one step from {_pos(doc['start_position'])}" if position is not None
               else f"walked from {doc['walk_start']} (flat), {doc['days']} trading days")
        out.write(f"  model {doc['model_uri']}; {how}; prices: {source}\n")

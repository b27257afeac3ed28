"""``trainkit list``: the cached models of the experiment, newest first — a thin command over
:meth:`TrainingManager.list_cached_models <trainkit.manager.TrainingManager.list_cached_models>`;
with ``--oos-window``, the models measured out of sample on that window, best first
(:meth:`TrainingManager.rank_models <trainkit.manager.TrainingManager.rank_models>`)."""

from __future__ import annotations

import click

from trainkit.cli.group import Settings
from trainkit.cli.options import SYMBOL, Parsed
from trainkit.cli.output import emit_json, print_models, print_ranked, stdout_for
from trainkit.walkforward.ranking import check_metric, parse_oos_window
from trainkit.walkforward.stitch import METRIC_DIRECTIONS

__all__ = ["list_"]


@click.command("list", short_help="List cached models and trainings in progress.")
@click.option("--symbol", "-s", type=SYMBOL, default=None, metavar="SYM", help="Only this symbol.")
@click.option("--sort", "metric", type=Parsed(check_metric, "metric"), default=None, metavar="METRIC",
              help=f"With --oos-window: rank by this out-of-sample metric, best first ({', '.join(METRIC_DIRECTIONS)}) "
                   "[default: sharpe].")
@click.option("--oos-window", type=Parsed(parse_oos_window, "window"), default=None, metavar="START..END",
              help="Only the models measured out of sample on this window (a fold's test window).")
@click.option("--json", "json_mode", is_flag=True, help="Print one JSON document (a list of rows) on stdout.")
@click.pass_obj
def list_(settings: Settings, symbol: str | None, metric: str | None, oos_window: tuple[str, str] | None,
          json_mode: bool) -> None:
    """List cached models (and trainings in progress), newest first; with --oos-window, the
    models a walk-forward or a search measured out of sample on that window, best first."""
    from trainkit.errors import NoStore

    if metric is not None and oos_window is None:
        raise click.UsageError("--sort needs --oos-window START..END: a Sharpe from one window against one from "
                               "another ranks markets, not models")
    with stdout_for(json_mode) as out:
        try:
            manager = settings.manager(create=False)
            if oos_window is not None:
                ranked = manager.rank_models(metric or "sharpe", oos_window, symbol)
                if json_mode:
                    emit_json(out, [r.to_dict() for r in ranked])
                else:
                    print_ranked(out, ranked, metric or "sharpe", oos_window)
                return
            models = manager.list_cached_models(symbol=symbol)
        except NoStore as exc:  # a read creates no store: nothing is cached there
            models, where_not = [], f" ({str(exc).split(': ', 1)[0]})"
        else:
            where_not = f" in experiment {settings.experiment!r}"
        if json_mode:
            emit_json(out, [m.to_dict() for m in models])
            return
        if not models:
            where = f" for {symbol}" if symbol else ""
            out.write(f"no cached models{where}{where_not}\n")
            return
        print_models(out, models, title=None)

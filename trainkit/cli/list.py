"""``trainkit list``: the cached models of the experiment, newest first — a thin command over
:meth:`TrainingManager.list_cached_models <trainkit.manager.TrainingManager.list_cached_models>`."""

from __future__ import annotations

import click

from trainkit.cli.group import Settings
from trainkit.cli.options import SYMBOL
from trainkit.cli.output import emit_json, print_models, stdout_for

__all__ = ["list_"]


@click.command("list", short_help="List cached models and trainings in progress.")
@click.option("--symbol", "-s", type=SYMBOL, default=None, metavar="SYM", help="Only this symbol.")
@click.option("--json", "json_mode", is_flag=True, help="Print one JSON document (a list of rows) on stdout.")
@click.pass_obj
def list_(settings: Settings, symbol: str | None, json_mode: bool) -> None:
    """List cached models (and trainings in progress), newest first."""
    from trainkit.errors import NoStore

    with stdout_for(json_mode) as out:
        try:
            models = settings.manager(create=False).list_cached_models(symbol=symbol)
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

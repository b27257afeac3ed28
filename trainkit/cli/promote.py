"""``trainkit promote``: gated promotion to an alias, its history and its rollback — a thin
command over :meth:`TrainingManager.promote <trainkit.manager.TrainingManager.promote>`.

Exit codes: ``0`` promoted (or, with ``--dry-run``, it would be); ``3`` a gate refused (nothing
changed; one line on stderr with the figures, and the document on stdout with ``--json``);
``2`` bad input; ``1`` a store or registry failure (the alias stays where it was)."""

from __future__ import annotations

import sys

import click

from trainkit.cli.exit import EXIT_OK, EXIT_REFUSED
from trainkit.cli.group import Settings
from trainkit.cli.options import SYMBOL, Parsed
from trainkit.cli.output import emit_json, print_promotion, print_promotion_history, stdout_for, ui_link
from trainkit.promotion import DEFAULT_ALIAS, DEFAULT_MIN_DSR, check_probability, check_source
from trainkit.store.contract import UI_MODEL_VERSION, check_alias, check_registered_name

__all__ = ["promote"]

PROBABILITY = Parsed(check_probability, "probability", flag=True)


@click.command(short_help="Promote the best model to an alias when its deflated Sharpe passes.")
@click.option("--symbol", type=SYMBOL, default=None, metavar="SYMBOL", help="The symbol whose model is promoted.")
@click.option("--study", default=None, metavar="NAME", help="Promote the best trial of this `trainkit tune` study.")
@click.option("--walkforward-run", "walkforward_run_id", default=None, metavar="RUN_ID",
              help="Promote the config of this walk-forward run.")
@click.option("--alias", type=Parsed(check_alias, "alias"), default=None, metavar="ALIAS",
              help=f"The alias to move [default: {DEFAULT_ALIAS}; with --history: every alias].")
@click.option("--min-dsr", type=PROBABILITY, default=DEFAULT_MIN_DSR, show_default=True, metavar="P",
              help="Gate: the deflated Sharpe ratio over every config tried on the window must be at least P.")
@click.option("--max-pbo", type=PROBABILITY, default=None, metavar="P",
              help="Gate: the probability of backtest overfitting must be at most P [default: not a gate].")
@click.option("--name", type=Parsed(check_registered_name, "name"), default=None, metavar="NAME",
              help="Registered model name [default: trainkit-<SYMBOL>, from --symbol].")
@click.option("--history", is_flag=True, help="List every recorded alias move of --name.")
@click.option("--rollback", is_flag=True, help="Point --alias of --name back at the version it had before the last promotion.")
@click.option("--dry-run", is_flag=True, help="Show the decision and change nothing.")
@click.option("--json", "json_mode", is_flag=True, help="Print one JSON document on stdout.")
@click.pass_obj
def promote(settings: Settings, symbol: str | None, study: str | None, walkforward_run_id: str | None, alias: str | None,
            min_dsr: float, max_pbo: float | None, name: str | None, history: bool, rollback: bool, dry_run: bool,
            json_mode: bool) -> int:
    """Promote the best trial of a study (or a walk-forward) to models:/NAME@ALIAS — only when
    its deflated Sharpe ratio, over every config tried on the same symbol and window (counted
    from the store now), passes --min-dsr (and its PBO --max-pbo). The chosen config is trained
    on the latest training window (usually cached), registered with its evidence, and the move
    recorded in experiment trainkit-promotions.

    Exit codes: 0 promoted; 3 refused by a gate (nothing changed); 2 bad input; 1 a store or
    registry failure (the alias stays where it was). Use `trainkit register --alias` to point an
    alias by hand, without a gate."""
    if history or rollback:
        return _history_or_rollback(settings, history, rollback, name or _default_name(symbol), alias, json_mode,
                                    dry_run)
    if symbol is None:
        raise click.UsageError("give --symbol (with --study or --walkforward-run), or --history / --rollback with --name")
    check_source(study, walkforward_run_id)
    with stdout_for(json_mode) as out:
        manager = settings.manager(create=not dry_run)
        res = manager.promote(
            symbol, study=study, walkforward_run_id=walkforward_run_id, alias=alias or DEFAULT_ALIAS, min_dsr=min_dsr,
            max_pbo=max_pbo, name=name, dry_run=dry_run)
        if json_mode:
            emit_json(out, res.to_dict())
        else:  # a version that moved: its page in the UI
            link = ui_link(manager.tracking_uri, UI_MODEL_VERSION, name=res.name,
                           version=res.version or "") if res.promoted else ""
            print_promotion(out, res, link)
    if not res.would_promote:
        sys.stderr.write(res.reason + "\n")
        return EXIT_REFUSED
    return EXIT_OK


def _default_name(symbol: str | None) -> str | None:
    from trainkit.settings import TRAINKIT_REGISTERED_NAME

    return TRAINKIT_REGISTERED_NAME.get().format(symbol=symbol) if symbol else None


def _history_or_rollback(settings: Settings, history: bool, rollback: bool, name: str | None, alias: str | None,
                         json_mode: bool, dry_run: bool) -> int:
    if history and rollback:
        raise click.UsageError("--history and --rollback exclude each other")
    if name is None:
        raise click.UsageError(f"--{'history' if history else 'rollback'} needs --name (or --symbol), "
                               "e.g. --name trainkit-AAPL")
    if dry_run:
        raise click.UsageError("--dry-run applies to a promotion, not to --history or --rollback")
    with stdout_for(json_mode) as out:
        if history:
            moves = settings.manager(create=False).promotion_history(name, alias)
            if json_mode:
                emit_json(out, [m.to_dict() for m in moves])
            else:
                print_promotion_history(out, name, moves)
            return EXIT_OK
        move = settings.manager().rollback(name, alias or DEFAULT_ALIAS)
        if json_mode:
            emit_json(out, move.to_dict())
        else:
            out.write(f"rolled back models:/{name}@{move.alias}: version {move.from_version} -> version {move.to_version} "
                      f"(recorded as {move.run_id})\n")
    return EXIT_OK

"""``trainkit clear``: remove cached models, showing them and asking first — a thin command over
:meth:`TrainingManager.plan_clear <trainkit.manager.TrainingManager.plan_clear>` and
:meth:`~trainkit.manager.TrainingManager.delete` (it deletes exactly what it showed)."""

from __future__ import annotations

import sys

import click

from trainkit.cli.exit import EXIT_RUNTIME
from trainkit.cli.group import Settings
from trainkit.cli.options import SYMBOL, Parsed
from trainkit.cli.output import emit_json, print_models, stdout_for
from trainkit.cli.shell import Refused
from trainkit.config import parse_older_than
from trainkit.errors import ConfigError
from trainkit.store.contract import check_config_hash

__all__ = ["clear"]


def _older_than(value: str) -> str:
    """A date or a duration, checked now and kept as given (the manager resolves it on its clock)."""
    try:
        parse_older_than(value)
    except ConfigError as exc:
        raise ConfigError(str(exc).replace("--older-than ", "")) from None  # click names the option
    return value


def _config_hash(value: str) -> str:
    return check_config_hash(value, "the hash")


@click.command(short_help="Remove cached models (shows them and asks first).")
@click.option("--symbol", "-s", type=SYMBOL, default=None, metavar="SYM", help="Only models of this symbol.")
@click.option("--older-than", type=Parsed(_older_than, "older_than"), default=None, metavar="DATE|DURATION",
              help="Only models created before a date (2022-01-01) or longer ago than a duration (30d, 12h, 2w).")
@click.option("--config-hash", type=Parsed(_config_hash, "config_hash"), default=None, metavar="HASH",
              help="Only models with this config hash.")
@click.option("--dry-run", is_flag=True, help="Show what would be removed; remove nothing.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation (required when stdin is not a terminal).")
@click.option("--purge", is_flag=True, help="Delete for good (local stores only) instead of MLflow's restorable soft delete.")
@click.option("--include-registered", is_flag=True, help="Also remove models registered in the Model Registry.")
@click.option("--json", "json_mode", is_flag=True, help="Print one JSON document ({removed, kept, …}) on stdout.")
@click.pass_obj
def clear(settings: Settings, symbol: str | None, older_than: str | None, config_hash: str | None, dry_run: bool,
          yes: bool, purge: bool, include_registered: bool, json_mode: bool) -> None:
    """Remove cached models matching every filter given (all of trainkit's when none is).

    Shows what it will remove, and what it keeps because it is registered, then asks. Without
    a terminal to ask on, it refuses (exit 2) unless --yes. Runs of other tools are never
    touched. Removed runs are soft-deleted (restorable in MLflow) unless --purge.
    """
    with stdout_for(json_mode) as out:
        manager = settings.reader()  # no store: nothing to remove, and none is made
        remove, kept = ([], []) if manager is None else manager.plan_clear(
            symbol=symbol, older_than=older_than, config_hash=config_hash, include_registered=include_registered)
        reasons = {m.run_id: f"registered as {', '.join(m.registered)}; pass --include-registered" for m in kept}
        doc = {"dry_run": dry_run, "purge": purge, "deleted": False,
               "removed": [m.to_dict() for m in remove],
               "kept": [{**m.to_dict(), "reason": reasons[m.run_id]} for m in kept]}
        human = sys.stderr if json_mode else out
        if not json_mode:
            verb = "would remove" if dry_run else "will remove"
            if remove:
                print_models(out, remove, title=f"{verb} {len(remove)} model(s)" + (" for good (purge)" if purge else ""))
            else:
                out.write("nothing to remove\n")
            if kept:
                print_models(out, kept, title=f"keeping {len(kept)} registered model(s)", extra=reasons)
        if dry_run or not remove:
            if not json_mode and dry_run and remove:
                out.write("dry run: nothing deleted\n")
            if json_mode:
                emit_json(out, doc)
            return
        if not yes:
            if not _interactive():
                raise Refused(
                    f"refusing to delete {len(remove)} model(s) without confirmation: stdin is not a terminal; "
                    "re-run with --yes (or --dry-run to preview)"
                )
            what = f"{'Purge' if purge else 'Delete'} {len(remove)} model(s)?"
            if not click.confirm(what, default=False, err=True):
                human.write("nothing deleted\n")
                raise click.exceptions.Exit(EXIT_RUNTIME)
        manager.delete(remove, purge=purge)  # exactly what was shown, not a re-query
        doc["deleted"] = True
        if json_mode:
            emit_json(out, doc)
        else:
            out.write(f"{'purged' if purge else 'deleted'} {len(remove)} model(s)"
                      + ("" if purge else " (soft-deleted: restorable in MLflow until `mlflow gc` removes them)") + "\n")


def _interactive() -> bool:
    try:
        return sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False

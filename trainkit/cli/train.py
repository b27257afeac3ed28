"""``trainkit train``: train, or fetch from the cache, one model per symbol (a thin command over
:meth:`TrainingManager.iter_models <trainkit.manager.TrainingManager.iter_models>`)."""

from __future__ import annotations

import contextlib
import logging
from typing import Any, TextIO

import click

from trainkit import settings as env_settings
from trainkit.cli.exit import EXIT_OK
from trainkit.cli.group import Settings
from trainkit.cli.options import (
    EXECUTOR_OPTION,
    FORCE_OPTION,
    RAY_ADDRESS_OPTION,
    WORKERS_OPTION,
    ListCommand,
    configs_from,
    model_options,
)
from trainkit.cli.output import (
    emit_json,
    error_row,
    one_line,
    print_train_dry_run,
    print_train_row,
    result_row,
    stdout_for,
    ui_link,
)
from trainkit.config import TrainConfig
from trainkit.errors import TrainkitError
from trainkit.store.contract import UI_MODEL

__all__ = ["register_row", "train"]

log = logging.getLogger("trainkit")


@click.command(cls=ListCommand, short_help="Train, or fetch from the cache, one model per symbol.")
@model_options()
@FORCE_OPTION
@click.option("--register", is_flag=True, help="Register each model in the Model Registry as trainkit-<SYMBOL>.")
@WORKERS_OPTION
@EXECUTOR_OPTION
@RAY_ADDRESS_OPTION
@click.option("--dry-run", is_flag=True, help="Print each config's hash and whether it is cached; train nothing.")
@click.pass_obj
def train(settings: Settings, force: bool, register: bool, workers: int, executor: str, ray_address: str | None,
          dry_run: bool, **opts: Any) -> None:
    """Train (or fetch from the cache) one model per symbol.

    Prints one line per symbol: symbol, cached / trained / fell back to synthetic, model URI,
    seconds. A model is served from the cache when a finished run with the same config hash
    exists (see --dry-run and `trainkit explain`); --force retrains.
    """
    from trainkit.executors import make_executor
    from trainkit.manager import ModelRequest

    configs = configs_from(opts)
    # exit 2 on --ray-address without --executor ray, before any I/O; a dry run trains nothing, so it
    # starts no local worker server
    runner = make_executor(executor, workers=1 if dry_run else min(workers, len(configs)), verbose=settings.verbose,
                           address=ray_address)
    symbols, json_mode, no_fallback = opts["symbols"], opts["json_mode"], opts["no_fallback"]

    with stdout_for(json_mode) as out:
        if dry_run:
            _dry_run(settings, configs, out, json_mode)
            return
        manager = settings.manager()

        project_run_id = env_settings.MLFLOW_RUN_ID.get()
        if project_run_id and len(symbols) > 1:
            log.warning("running under `mlflow run` with %d symbols: the project run %s records none of them "
                        "(pass one symbol per project run)", len(symbols), project_run_id)
            project_run_id = None
        rows: list[dict[str, Any]] = []
        codes: list[int] = []
        width = max(len(s) for s in symbols)

        def report(row: dict[str, Any], code: int, rec: Any = None) -> None:
            if code == EXIT_OK and register:
                code = register_row(manager, row)
            rows.append(row)
            codes.append(code)
            if not json_mode or row["status"] == "error":  # an error is one line on stderr in both modes
                print_train_row(out, row, width, ui_link(manager.tracking_uri, UI_MODEL, model_id=rec.model_id or "",
                                                         experiment_id=rec.experiment_id) if rec else "")

        if project_run_id:  # `mlflow run`: one symbol, in this process, recorded in the project run
            try:
                res = manager.get_config(configs[0], force=force, no_fallback=no_fallback, project_run_id=project_run_id,
                                         load=False)
                report(result_row(res), EXIT_OK, res.record)
            except TrainkitError as exc:
                report(error_row(configs[0].symbol, exc, settings.verbose), exc.exit_code)
        else:
            requests = [ModelRequest(c, force=force, no_fallback=no_fallback) for c in configs]
            # load=False: a hit is verified (sha256) and reported, never deserialised (no torch)
            with contextlib.closing(manager.iter_models(requests, runner, load=False)) as outcomes:  # Ctrl-C: cancelled at once
                for outcome in outcomes:
                    if outcome.result is not None:
                        report(result_row(outcome.result), EXIT_OK, outcome.result.record)
                    else:
                        report(error_row(outcome.request.config.symbol, outcome.error, settings.verbose),
                               outcome.exit_code)

        if json_mode:
            order = {s: i for i, s in enumerate(symbols)}
            emit_json(out, sorted(rows, key=lambda r: order[r["symbol"]]))
    if any(codes):
        raise click.exceptions.Exit(max(codes))


def _dry_run(settings: Settings, configs: list[TrainConfig], out: TextIO, json_mode: bool) -> None:
    manager = settings.reader()
    rows = []
    for c in configs:
        rec = manager.lookup(c) if manager is not None else None  # reads only: creates no experiment either
        rows.append({
            "symbol": c.symbol, "config_hash": c.config_hash, "cached": rec is not None,
            "model_uri": rec.model_uri if rec else None, "run_id": rec.run_id if rec else None,
            "status": rec.status if rec else None, "config": c.to_dict(),
        })
    if json_mode:
        emit_json(out, rows)
    else:
        print_train_dry_run(out, rows)


def register_row(manager: Any, row: dict[str, Any]) -> int:
    """``--register``: adds ``registered`` ("name/version") to the row and returns 0, or adds
    the error and returns its exit code (the model itself is fine and stays cached)."""
    try:
        name, version = manager.register(row["model_uri"])
    except TrainkitError as exc:
        log.error("%s: could not register %s: %s", row["symbol"], row["model_uri"], one_line(exc))
        row.update(registered=None, error=f"registration failed: {one_line(exc)}")
        return exc.exit_code
    row["registered"] = f"{name}/{version}"
    return EXIT_OK

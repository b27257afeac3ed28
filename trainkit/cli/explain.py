"""``trainkit explain``: why a ``train`` request is (not) served from the cache — a thin command
over :meth:`TrainingManager.explain <trainkit.manager.TrainingManager.explain>`."""

from __future__ import annotations

from typing import Any

import click

from trainkit.cli.group import Settings
from trainkit.cli.options import ListCommand, configs_from, model_options
from trainkit.cli.output import emit_json, print_explanation, stdout_for

__all__ = ["explain"]


@click.command(cls=ListCommand, short_help="Why is a request (not) served from the cache?")
@model_options()
# train's options that only change how it runs: accepted, so a train command line can be explained as it is
@click.option("--force", type=click.BOOL, is_flag=False, flag_value=True, default=False, hidden=True)
@click.option("--register", is_flag=True, hidden=True)
@click.option("--workers", type=int, default=1, hidden=True)
@click.option("--executor", default="local", hidden=True)
@click.option("--ray-address", default=None, hidden=True)
@click.option("--dry-run", is_flag=True, hidden=True)
@click.pass_obj
def explain(settings: Settings, force: bool, register: bool, workers: int, executor: str, ray_address: str | None,
            dry_run: bool, **opts: Any) -> None:
    """Explain a `train` request without training: its resolved config and hash, whether it
    is cached (which run answers, and why other runs with that hash do not), and when it is
    not, the nearest cached configs of the symbol with exactly the fields that differ.

    Takes the same options as `train` (a train command line can be explained as it is; the
    options that only change how train runs are ignored). Reads the tracking store and the
    local download cache only: never the network, never writes.
    """
    from trainkit.errors import NoStore
    from trainkit.explain import nothing_stored

    configs = configs_from(opts)
    with stdout_for(opts["json_mode"]) as out:
        try:
            manager = settings.manager(create=False)
        except NoStore as exc:  # a read creates no store: nothing answers any request there
            explanations = [nothing_stored(c, str(exc)) for c in configs]
        else:
            explanations = [manager.explain(c, no_fallback=opts["no_fallback"]) for c in configs]
        if opts["json_mode"]:
            emit_json(out, [e.to_dict() for e in explanations])
            return
        for e in explanations:
            print_explanation(out, e)

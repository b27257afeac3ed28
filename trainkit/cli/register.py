"""``trainkit register``: a cached model into the MLflow Model Registry — a thin command over
:meth:`TrainingManager.register <trainkit.manager.TrainingManager.register>`."""

from __future__ import annotations

import click

from trainkit.cli.group import Settings
from trainkit.cli.options import MODEL_URI, Parsed
from trainkit.cli.output import emit_json, stdout_for
from trainkit.store.contract import check_alias, check_registered_name

__all__ = ["register"]


@click.command(short_help="Register a model in the MLflow Model Registry.")
@click.option("--model-uri", type=MODEL_URI, required=True, metavar="URI", help="The model to register.")
@click.option("--name", type=Parsed(check_registered_name, "name"), default=None, metavar="NAME",
              help="Registered model name [default: trainkit-<SYMBOL>].")
@click.option("--alias", type=Parsed(check_alias, "alias"), default=None, metavar="ALIAS",
              help="Also point this alias (e.g. champion) at the new version.")
@click.option("--json", "json_mode", is_flag=True, help="Print one JSON document on stdout.")
@click.pass_obj
def register(settings: Settings, model_uri: str, name: str | None, alias: str | None, json_mode: bool) -> None:
    """Register a cached model in the MLflow Model Registry (registered models are kept by
    `trainkit clear` unless --include-registered)."""
    with stdout_for(json_mode) as out:
        reg_name, version = settings.manager(create=False).register(model_uri, name=name, alias=alias)
        doc = {"model_uri": model_uri, "name": reg_name, "version": version, "alias": alias,
               "registered_uri": f"models:/{reg_name}/{version}",
               "alias_uri": f"models:/{reg_name}@{alias}" if alias else None}
        if json_mode:
            emit_json(out, doc)
            return
        line = f"registered {model_uri} as {reg_name} version {version}: models:/{reg_name}/{version}"
        if alias:
            line += f" (alias {alias}: models:/{reg_name}@{alias})"
        out.write(line + "\n")

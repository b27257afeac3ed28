"""The catalogue of models in the cache experiment: find what answers a hash, list, delete and
purge, the Model Registry (who is registered, registering), resolving any model URI to its
LoggedModel and source run, and marking a model broken.

Read paths never write: ``find`` and ``list`` on a store without the experiment return
nothing instead of creating it. Delete paths fail closed: when the registry cannot be read,
nothing registered can be told apart, so nothing is deleted (``plan`` raises).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from trainkit import settings
from trainkit.config import validate_symbol
from trainkit.errors import ModelNotFoundError, StoreError
from trainkit.store.connection import (
    hard_delete_logged_model,
    hard_delete_run,
    is_already_exists,
    is_remote,
    not_found_as,
    supports_hard_delete,
    tracking_backend,
)
from trainkit.store.contract import (
    TAG_BROKEN,
    TAG_CLAIM,
    TAG_HASH,
    TAG_MODEL_ID,
    TAG_MODEL_VERSIONS,
    TAG_SYMBOL,
    TAG_VERSION,
    ModelStatus,
    ModelURI,
    check_alias,
    check_config_hash,
    check_registered_name,
    parse_model_uri,
    quote,
    tag_spellings,
)
from trainkit.store.records import CachedModel, is_model_run, is_stale, record_from_run, served_order

log = logging.getLogger("trainkit")

Accept = Callable[[CachedModel], bool]


class Catalog:
    """Models of one cache experiment (``experiment_id()`` creates it on first write;
    ``existing_experiment_id()`` only looks)."""

    def __init__(self, conn: Any, experiment_id: Callable[[], str], existing_experiment_id: Callable[[], str | None]) -> None:
        self.conn = conn
        self._experiment_id = experiment_id
        self._existing = existing_experiment_id

    @property
    def client(self) -> Any:
        return self.conn.client

    # ---- lookup
    def candidates(self, config_hash: str) -> list[tuple[CachedModel, Any]]:
        """Every servable model of ``config_hash`` (FINISHED, trainkit's, not broken) with its
        run, in served order: trained on the requested source first, then newest."""
        h = check_config_hash(config_hash)
        exp = self._existing()
        if exp is None:
            return []
        runs = self._search_tagged(exp, [(TAG_HASH, f"= {quote(h)}")], "attributes.status = 'FINISHED'")
        runs = sorted((r for r in runs if is_model_run(r) and not r.data.tags.get(TAG_BROKEN)), key=served_order)
        return [(record_from_run(r), r) for r in runs]

    def unservable(self, config_hash: str) -> list[tuple[Any, str]]:
        """Runs that carry ``config_hash`` (or a lease on it) but will not answer it, each with
        the reason — broken, deleted, unfinished, lease: what ``trainkit explain`` shows."""
        h = check_config_hash(config_hash)
        exp = self._existing()
        if exp is None:
            return []
        from mlflow.entities import ViewType

        out: list[tuple[Any, str]] = []
        with self.conn.errors("searching runs"):
            runs = self.client.search_runs([exp], f"tags.{TAG_HASH} = {quote(h)}", run_view_type=ViewType.ALL, max_results=200)
            leases = self.client.search_runs([exp], f"tags.`{TAG_CLAIM}` = {quote(h)}", run_view_type=ViewType.ALL, max_results=200)
        for r in runs:
            if r.info.lifecycle_stage == "deleted":
                out.append((r, "deleted (trainkit clear): restore it in MLflow or train again"))
            elif r.info.status != "FINISHED":
                out.append((r, f"not finished (status {r.info.status}): nothing unfinished is ever served"))
            elif r.data.tags.get(TAG_BROKEN):
                out.append((r, f"broken: {r.data.tags[TAG_BROKEN]}"))
            elif not is_model_run(r):
                out.append((r, "not a trainkit model run (another tool's run with a config_hash tag)"))
        for r in leases:
            if r.info.status == "RUNNING" and r.info.lifecycle_stage == "active":
                state = "stale: will be taken over" if is_stale(r) else "live: being trained now"
                out.append((r, f"training lease ({state})"))
        return out

    def find(self, config_hash: str, accept: Accept | None = None) -> CachedModel | None:
        """The model that answers ``config_hash``, or ``None`` (deterministic when several do).
        ``accept(record) -> bool`` narrows what counts (e.g. not the model a forced request
        replaces)."""
        for rec, _run in self.candidates(config_hash):
            if accept is None or accept(rec):
                return rec
        return None

    def list_models(self, symbol: str | None = None, include_training: bool = True,
                    strict_registry: bool = False) -> list[CachedModel]:
        """trainkit's FINISHED models (and, optionally, live leases as ``training``), newest
        first. Runs of other tools in the experiment are never listed. When the registry cannot
        be read, ``registered`` is unknown: with ``strict_registry`` that raises (deletion must
        fail closed), otherwise a warning says so."""
        exp = self._existing()
        if exp is None:
            return []
        sym = [(TAG_SYMBOL, f"= {quote(validate_symbol(symbol))}")] if symbol else []
        runs = self._search_tagged(exp, [(TAG_HASH, "LIKE '%'"), *sym], "attributes.status = 'FINISHED'")
        try:
            registered = self.registered_index()
        except StoreError as exc:
            if strict_registry:
                raise
            log.warning("could not read the Model Registry (%s): registrations are not shown", exc)
            registered = {}
        out = [
            record_from_run(r, registered=tuple(registered.get(r.info.run_id, ()) or registered.get(r.data.tags.get(TAG_MODEL_ID, ""), ())))
            for r in runs
            if is_model_run(r)
        ]
        if include_training:
            leases = self._search_tagged(exp, [(TAG_CLAIM, "LIKE '%'"), *sym], "attributes.status = 'RUNNING'")
            out += [record_from_run(r, status=ModelStatus.TRAINING) for r in leases
                    if r.data.tags.get(TAG_VERSION) and not is_stale(r)]
        out.sort(key=lambda m: (m.created, m.run_id), reverse=True)
        return out

    def model_runs(self, symbol: str) -> list[Any]:
        """The FINISHED model runs of ``symbol`` (trainkit's, newest first), with their params:
        what ``explain`` compares a request with."""
        exp = self._existing()
        if exp is None:
            return []
        runs = self._search_tagged(exp, [(TAG_SYMBOL, f"= {quote(validate_symbol(symbol))}")],
                                   "attributes.status = 'FINISHED'")
        return [r for r in runs if is_model_run(r) and not r.data.tags.get(TAG_BROKEN)]

    def _search_tagged(self, exp: str, clauses: list[tuple[str, str]], rest: str) -> list[Any]:
        """Runs matching every ``(tag, condition)`` under any spelling the tag has had
        (:data:`~trainkit.store.contract.LEGACY_TAGS`: one search per combination — one, until a
        tag is renamed), newest first, each run once."""
        seen: dict[str, Any] = {}
        for names in itertools.product(*(tag_spellings(tag) for tag, _cond in clauses)):
            where = " and ".join(f"tags.`{name}` {cond}" for name, (_tag, cond) in zip(names, clauses, strict=True))
            for r in self.conn.search([exp], f"{where} and {rest}"):
                seen.setdefault(r.info.run_id, r)
        return sorted(seen.values(), key=lambda r: (r.info.start_time or 0, r.info.run_id), reverse=True)

    def mark_broken(self, run_id: str, reason: str) -> None:
        """Tag a run whose model failed verification: kept for inspection, never served."""
        log.warning("cached model of run %s is unusable and will be retrained: %s", run_id, reason)
        with contextlib.suppress(Exception):
            self.client.set_tag(run_id, TAG_BROKEN, reason[:5000])

    # ---- registry
    def registered_index(self) -> dict[str, list[str]]:
        """run_id and model_id → ``["name/version", …]`` for every registered model version.
        Raises :class:`StoreError` when the registry cannot be read (never guesses)."""
        out: dict[str, list[str]] = {}
        token = None
        with self.conn.registry_errors("reading the model registry"):
            while True:
                page = self.client.search_model_versions(max_results=1000, page_token=token)
                for mv in page:
                    label = f"{mv.name}/{mv.version}"
                    for key in {mv.run_id, getattr(mv, "model_id", None)} - {None, ""}:
                        out.setdefault(key, []).append(label)
                token = page.token
                if not token:
                    return out

    def register(self, model_uri: str, name: str, alias: str | None = None,
                 tags: Mapping[str, str] | None = None) -> tuple[str, str]:
        """Register the LoggedModel behind ``model_uri`` as a version of ``name`` (created if
        needed), with ``tags``, and optionally point ``alias`` at it. Returns ``(name, version)``.

        As ``mlflow.register_model`` does it (MLflow 3.17), with trainkit's client: the version's
        source is the LoggedModel (``models:/m-…``), and the LoggedModel's ``mlflow.modelVersions``
        tag lists its versions, which is what the UI reads to show it as registered."""
        name = check_registered_name(name)
        alias = check_alias(alias) if alias is not None else None
        lm, run, _label = self.resolve(model_uri)
        from mlflow.exceptions import MlflowException

        with self.conn.registry_errors(f"registering {model_uri} as {name}"):
            try:
                self.client.create_registered_model(name, tags={TAG_SYMBOL: run.data.tags.get(TAG_SYMBOL, "")})
            except MlflowException as exc:
                if not is_already_exists(exc):
                    raise
            # a SQL registry resolves models:/m-… through MlflowClient() (the process-wide tracking
            # URI, MLflow 3.17): point it at ours for the call; a server needs model_id
            with self.conn.fluent():
                mv = self.client.create_model_version(
                    name, source=f"models:/{lm.model_id}", run_id=run.info.run_id, model_id=lm.model_id,
                    tags={TAG_HASH: run.data.tags.get(TAG_HASH, ""), **(tags or {})},
                    await_creation_for=None,  # an MLflow registry creates it READY: no 5-minute poll, no log line
                )
        with self.conn.errors(f"listing {name} version {mv.version} on its model {lm.model_id}"):
            self._list_version(lm.model_id, name, mv.version)
        if alias:
            with self.conn.registry_errors(f"pointing models:/{name}@{alias} at version {mv.version}"):
                self.client.set_registered_model_alias(name, alias, mv.version)
        return name, str(mv.version)

    def _list_version(self, model_id: str, name: str, version: Any) -> None:
        """Add ``name``/``version`` to the LoggedModel's ``mlflow.modelVersions`` tag (a JSON
        list of ``{"name", "version"}``, as ``mlflow.register_model`` keeps it) unless it is
        there: a tracking server adds it itself when the version is created."""
        current = self.client.get_logged_model(model_id).tags.get(TAG_MODEL_VERSIONS)
        listed = json.loads(current) if current else []
        if any(e.get("name") == name and str(e.get("version")) == str(version) for e in listed):
            return
        listed.append({"name": name, "version": version})
        self.client.set_logged_model_tags(model_id, {TAG_MODEL_VERSIONS: json.dumps(listed)})

    def default_registered_name(self, model_uri: str) -> str:
        """``TRAINKIT_REGISTERED_NAME`` (``trainkit-{symbol}``) filled in for this model."""
        _lm, run, _label = self.resolve(model_uri)
        return settings.TRAINKIT_REGISTERED_NAME.get().format(symbol=run.data.tags.get(TAG_SYMBOL, "model"))

    # ---- URIs
    def resolve(self, uri: str | ModelURI, run: Any = None) -> tuple[Any, Any, str | None]:
        """``(logged_model, source_run, "name/version" or None)`` behind any model URI.
        ``run``: the run a ``runs:/`` URI names, when the caller already holds it."""
        parsed = uri if isinstance(uri, ModelURI) else parse_model_uri(uri)
        text = parsed.text
        label: str | None = None
        with self.conn.errors(f"resolving {text}"), not_found_as(text):
            if parsed.kind == "run":
                if run is None or run.info.run_id != parsed.run_id:
                    run = self.client.get_run(parsed.run_id)
                model_id = run.data.tags.get(TAG_MODEL_ID)
                if not model_id:
                    outs = run.outputs.model_outputs if run.outputs else []
                    model_id = outs[0].model_id if outs else None
                if not model_id:
                    raise ModelNotFoundError(
                        f"run {parsed.run_id} has no trainkit model (still training, failed, or not a trainkit run)")
                lm = self.client.get_logged_model(model_id)
            else:
                if parsed.kind == "logged_model":
                    lm = self.client.get_logged_model(parsed.model_id)
                else:
                    if parsed.kind == "alias":
                        mv = self.client.get_model_version_by_alias(parsed.name, parsed.alias)
                    else:
                        mv = self.client.get_model_version(parsed.name, parsed.version)
                    label = f"{mv.name}/{mv.version}"
                    src = mv.source or ""
                    mid = getattr(mv, "model_id", None) or (src.split("/", 1)[1] if src.startswith("models:/") else None)
                    if not mid:
                        raise ModelNotFoundError(f"{text} does not point at a trainkit model (source {src!r})")
                    lm = self.client.get_logged_model(mid)
                if not lm.source_run_id:
                    raise ModelNotFoundError(f"{text} has no source run: not a trainkit model")
                run = self.client.get_run(lm.source_run_id)
        if run.info.lifecycle_stage == "deleted" or str(getattr(lm.status, "name", lm.status)) == "DELETED":
            raise ModelNotFoundError(f"the model at {text} was deleted (trainkit clear); restore the run or train again")
        return lm, run, label

    # ---- delete / purge
    def delete(self, models: Iterable[CachedModel], *, purge: bool = False) -> None:
        """Soft-delete the runs *and* their logged models (in MLflow 3 a soft-deleted run's
        model still loads by URI). ``purge`` then removes them for good where the backend
        allows it (local sqlite/file stores); a remote server's admin runs ``mlflow gc``."""
        models = list(models)
        uri = self.conn.tracking_uri
        if purge and is_remote(uri):
            raise StoreError(
                f"--purge cannot hard-delete on the remote server {uri}: nothing was deleted. "
                "Run `trainkit clear` without --purge, then ask the server's admin to run `mlflow gc`"
            )
        if purge and not supports_hard_delete(tracking_backend(uri)):
            raise StoreError(f"--purge is not supported by the tracking store {uri}: nothing was deleted; "
                             "run `trainkit clear` without --purge")
        with self.conn.errors("deleting runs"):
            for m in models:
                self.client.delete_run(m.run_id)
                if m.model_id:
                    with contextlib.suppress(Exception):
                        self.client.delete_logged_model(m.model_id)
        if purge and models:
            self._purge([m.run_id for m in models], [m.model_id for m in models if m.model_id])

    def _purge(self, run_ids: list[str], model_ids: list[str]) -> None:
        """Hard-delete exactly these (already soft-deleted) runs and logged models with their
        artifacts — what ``mlflow gc --run-ids … --logged-model-ids …`` does, without gc's
        other effect of purging *every* deleted experiment in the store (other people's)."""
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        backend = tracking_backend(self.conn.tracking_uri)
        with self.conn.errors("purging deleted runs"):
            for model_id in model_ids:
                lm = backend.get_logged_model(model_id, allow_deleted=True)
                with contextlib.suppress(FileNotFoundError):
                    get_artifact_repository(lm.artifact_location).delete_artifacts()
                hard_delete_logged_model(backend, model_id)
            for run_id in run_ids:
                run = backend.get_run(run_id)
                if run.info.lifecycle_stage != "deleted":
                    raise StoreError(f"run {run_id} is not deleted: refusing to purge it")
                with contextlib.suppress(FileNotFoundError):
                    get_artifact_repository(run.info.artifact_uri).delete_artifacts()
                hard_delete_run(backend, run_id)

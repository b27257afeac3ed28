"""``ModelStore``: trainkit's view of one tracking store and cache experiment — a short facade
over the connection, the catalogue, the leases, runs and the model flavor — and the module
functions ``load_model`` / ``load_bundle`` / ``default_store``.
"""

from __future__ import annotations

import tempfile
from typing import Any

from trainkit.config import TrainConfig
from trainkit.store import contract as C
from trainkit.store import flavor, runs
from trainkit.store.catalog import Accept, Catalog
from trainkit.store.connection import Connection, resolve_tracking_uri
from trainkit.store.contract import DEFAULT_EXPERIMENT
from trainkit.store.lease import Lease, LeaseManager
from trainkit.provenance import DataProvenance
from trainkit.store.records import CachedModel


class ModelStore:
    """trainkit's view of one MLflow tracking store and its cache experiment.

    ``catalog`` (find, list, delete, registry, URIs) and ``leases`` (who trains what) are its
    parts; the methods here are the operations the manager, backtests and the CLI use."""

    def __init__(self, tracking_uri: str | None = None, experiment_name: str = DEFAULT_EXPERIMENT, *,
                 create: bool = True) -> None:
        self.conn = Connection(tracking_uri, create=create)
        self.tracking_uri = self.conn.tracking_uri
        self.client = self.conn.client
        self.experiment_name = experiment_name
        self.catalog = Catalog(self.conn, lambda: self.experiment_id, self.experiment_id_if_exists)
        self.leases = LeaseManager(self.conn, lambda: self.experiment_id)

    def errors(self, what: str) -> Any:
        return self.conn.errors(what)

    # ---- experiments
    @property
    def experiment_id(self) -> str:
        """The cache experiment's id, created on first use."""
        return self.conn.experiment_id(self.experiment_name)

    def experiment_id_if_exists(self) -> str | None:
        return self.conn.experiment_id_if_exists(self.experiment_name)

    # ---- the cache
    def candidates(self, config_hash: str) -> list[tuple[CachedModel, Any]]:
        return self.catalog.candidates(config_hash)

    def find(self, config_hash: str, accept: Accept | None = None) -> CachedModel | None:
        return self.catalog.find(config_hash, accept)

    def list_models(self, symbol: str | None = None, include_training: bool = True,
                    strict_registry: bool = False) -> list[CachedModel]:
        return self.catalog.list_models(symbol, include_training, strict_registry)

    def delete(self, models: Any, *, purge: bool = False) -> None:
        """Delete ``models`` (see :meth:`Catalog.delete`). Deleting runs needs MANAGE on the
        experiment: asked first, so a user without it deletes nothing rather than some."""
        models = list(models)
        if models:
            self.conn.require("MANAGE", [self.experiment_name], f"deleting {len(models)} model(s)")
        self.catalog.delete(models, purge=purge)

    def mark_broken(self, run_id: str, reason: str) -> None:
        self.catalog.mark_broken(run_id, reason)

    def register(self, model_uri: str, name: str | None = None, alias: str | None = None) -> tuple[str, str]:
        """Register the model (as ``TRAINKIT_REGISTERED_NAME``, ``trainkit-<SYMBOL>``, by default)."""
        return self.catalog.register(model_uri, name or self.catalog.default_registered_name(model_uri), alias)

    def resolve(self, uri: str, run: Any = None) -> tuple[Any, Any]:
        """``(logged_model, source_run)`` behind any supported model URI."""
        lm, run, _label = self.catalog.resolve(uri, run)
        return lm, run

    # ---- training
    def acquire(self, config: TrainConfig, provenance: DataProvenance, project_run_id: str | None = None, *,
                defer_tie: bool = False) -> Lease | None:
        """A :class:`Lease` on ``config``'s hash, or ``None`` when another trainer holds it
        (then :meth:`LeaseManager.wait`). ``project_run_id``: train into ``mlflow run``'s run.
        ``defer_tie``: see :meth:`LeaseManager.acquire`."""
        return self.leases.acquire(
            config.config_hash,
            lambda: runs.create_training_run(self.conn, self.experiment_id, config, provenance, project_run_id),
            label=config.symbol, defer_tie=defer_tie,
        )

    def metrics_sink(self, run_id: str) -> runs.MlflowMetricsSink:
        return runs.MlflowMetricsSink(self.client, run_id, retrying=self.conn.retrying)

    def publish(self, lease: Lease, config: TrainConfig, **kwargs: Any) -> CachedModel | None:
        """Publish the trained model of ``lease`` (see :func:`trainkit.store.runs.publish`):
        the record, or ``None`` if the lease was taken over meanwhile."""
        return runs.publish(self.conn, self.experiment_id, lease, config, **kwargs)

    # ---- other runs
    def log_run(self, experiment_name: str, **kwargs: Any) -> str:
        """Log a complete FINISHED run in ``experiment_name`` (see :func:`runs.log_finished_run`)."""
        return runs.log_finished_run(self.conn, self.conn.experiment_id(experiment_name), **kwargs)

    def tag_run(self, run_id: str, tags: dict[str, str]) -> None:
        with self.errors("tagging a run"):
            self.client.log_batch(run_id, tags=runs.as_tags(tags))

    def get_run(self, run_id: str) -> Any:
        with self.errors("reading a run"):
            return self.client.get_run(run_id)

    # ---- `mlflow run`: the project run MLflow made for this process
    def can_train_into(self, run_id: str) -> bool:
        """A miss trains into ``mlflow run``'s project run when that run is in the cache
        experiment and holds no model or lease yet (a multi-symbol project run holds one model;
        the other symbols get runs of their own). See docs/ARCHITECTURE.md, *`mlflow run`*."""
        run = self.get_run(run_id)
        tags = run.data.tags
        return (
            run.info.experiment_id == self.experiment_id
            and run.info.status == "RUNNING"
            and not any(tags.get(t) for t in (C.TAG_HASH, C.TAG_CLAIM, C.TAG_MODEL_ID))
        )

    def note_project_run(self, project_run_id: str, record: CachedModel, *, cache_hit: bool) -> None:
        """Say in ``mlflow run``'s project run which cached run served it — unless the model was
        trained into it, or it holds a model of its own (trained into it for another symbol).
        A run without a model never carries ``config_hash``."""
        if project_run_id == record.run_id or self.get_run(project_run_id).data.tags.get(C.TAG_MODEL_ID):
            return
        self.tag_run(project_run_id, {
            C.TAG_MODEL_URI: record.model_uri,
            C.TAG_MODEL_RUN_ID: record.run_id,
            C.TAG_CACHE_HIT: "true" if cache_hit else "false",
            C.TAG_SYMBOL: record.symbol,
        })

    def note_backtest(self, project_run_id: str, result: Any) -> None:
        """Under ``mlflow run -e backtest``: say in the project run where the backtest is."""
        self.tag_run(project_run_id, {
            C.TAG_BACKTEST_RUN_ID: result.run_id, C.TAG_MODEL_URI: result.model_uri,
            C.TAG_SOURCE_RUN_ID: result.source_run_id, C.TAG_SYMBOL: result.symbol,
        })

    # ---- loading
    def fetch_model_files(self, uri: str, dst: str, run: Any = None) -> tuple[dict[str, str], Any, Any, str | None]:
        """Download the files of a model into ``dst`` and verify the policy's sha256 against
        the run's tag *before* anyone deserialises it. Returns ``({key: local path}, source
        run, logged model, "name/version" or None)``. ``run``: the source run when the
        caller already has it (a cache hit found it), saving a round trip."""
        lm, run, label = self.catalog.resolve(uri, run)
        expected = flavor.recorded_sha256(run)  # before downloading: an unverifiable model is refused
        paths = flavor.download_model(self.conn, lm, uri, dst)
        flavor.verify(paths, expected, uri)
        return paths, run, lm, label

    def verify(self, uri: str, run: Any = None) -> None:
        """Check the model at ``uri`` is there and its bytes are the ones recorded, without
        deserialising it (no torch, no stable-baselines3): what a caller that only reports a
        cache hit needs. :class:`IntegrityError` / :class:`ModelNotFoundError` as a load would."""
        with tempfile.TemporaryDirectory(prefix="trainkit-verify-") as tmp:
            self.fetch_model_files(uri, tmp, run=run)

    def config_of(self, uri: str) -> Any:
        """The verified model's :class:`~trainkit.config.TrainConfig` (its ``config.json``),
        without deserialising the policy."""
        with tempfile.TemporaryDirectory(prefix="trainkit-config-") as tmp:
            paths, _run, _lm, _label = self.fetch_model_files(uri, tmp)
            return flavor.read_config(paths["config"])

    def load_bundle(self, uri: str, run: Any = None) -> flavor.ModelBundle:
        """The verified model at ``uri`` with its config and feature spec."""
        with tempfile.TemporaryDirectory(prefix="trainkit-load-") as tmp:
            paths, run, lm, label = self.fetch_model_files(uri, tmp, run=run)
            model, config, spec = flavor.load_files(paths)
        return flavor.ModelBundle(model=model, config=config, feature_spec=spec, run_id=run.info.run_id,
                                  model_uri=uri, model_id=lm.model_id, registered_version=label)


# ----------------------------------------------------------------------------- module API
_stores: dict[tuple[str, str], ModelStore] = {}


def default_store(tracking_uri: str | None = None, experiment_name: str = DEFAULT_EXPERIMENT) -> ModelStore:
    """One :class:`ModelStore` per (tracking URI, experiment) in this process, for work on
    models that exist (load, backtest, signal): it never creates a store
    (:class:`~trainkit.errors.NoStore` when there is none)."""
    key = (resolve_tracking_uri(tracking_uri), experiment_name)
    if key not in _stores:
        _stores[key] = ModelStore(*key, create=False)
    return _stores[key]


def load_model(uri: str, tracking_uri: str | None = None) -> Any:
    """The stable-baselines3 model behind ``runs:/…`` or ``models:/…``, verified first."""
    return default_store(tracking_uri).load_bundle(uri).model


def load_bundle(uri: str, tracking_uri: str | None = None, store: ModelStore | None = None,
                run: Any = None) -> tuple[Any, flavor.ModelBundle]:
    """``(SB3 model, ModelBundle)`` for ``uri``, verified before deserialising."""
    bundle = (store or default_store(tracking_uri)).load_bundle(uri, run=run)
    return bundle.model, bundle

"""Everything trainkit does with MLflow, and the only package that imports it (besides the
pyfunc file MLflow executes on load). MLflow is the cache, the catalogue and the audit trail:
there are no side files.

The modules, each with one job (docs/ARCHITECTURE.md, "The store"):

============== ==========================================================================
contract       experiment, tag and param names, statuses, the model-URI grammar, hash check
connection     URI resolution, per-scheme preparation, error translation, private MLflow calls
records        CachedModel, provenance, served order, the staleness rule
lease          the lease protocol: acquire / wait / is-holder / heartbeat / release / fail
catalog        find, list, delete/purge, registry, URI resolution, mark broken
flavor         the model format: its files, save / log / load, sha256 verification
runs           the training run's life, backtest and project runs, the metrics sink
model_store    ModelStore, the facade; load_model / load_bundle / default_store
============== ==========================================================================

Importing this package imports no MLflow (``trainkit --help`` stays fast); each function
imports what it needs when it runs.
"""

from trainkit.store.catalog import Catalog
from trainkit.store.connection import Connection, prepare_tracking, resolve_tracking_uri
from trainkit.store.contract import (
    BACKTEST_EXPERIMENT,
    DEFAULT_EXPERIMENT,
    MODEL_NAME,
    TAG_BROKEN,
    TAG_CLAIM,
    TAG_CLAIM_STATE,
    TAG_DATA_DIGEST,
    TAG_FAILURE,
    TAG_FALLBACK_REASON,
    TAG_HASH,
    TAG_HEARTBEAT,
    TAG_MODEL_ID,
    TAG_MODEL_SHA,
    TAG_MODEL_URI,
    TAG_SOURCE,
    TAG_SOURCE_EFFECTIVE,
    TAG_SYMBOL,
    TAG_VERSION,
    WALKFORWARD_EXPERIMENT,
    ModelStatus,
    ModelURI,
    RequestStatus,
    check_config_hash,
    parse_model_uri,
    validate_model_uri,
)
from trainkit.store.flavor import MODEL_FILES, ModelBundle
from trainkit.store.lease import Lease, LeaseManager
from trainkit.store.model_store import ModelStore, default_store, load_bundle, load_model
from trainkit.provenance import DataProvenance
from trainkit.store.records import CachedModel, is_stale, record_from_run
from trainkit.store.runs import MlflowMetricsSink

__all__ = [
    "BACKTEST_EXPERIMENT", "DEFAULT_EXPERIMENT", "MODEL_FILES", "MODEL_NAME", "WALKFORWARD_EXPERIMENT",
    "TAG_BROKEN", "TAG_CLAIM", "TAG_CLAIM_STATE", "TAG_DATA_DIGEST", "TAG_FAILURE", "TAG_FALLBACK_REASON",
    "TAG_HASH", "TAG_HEARTBEAT", "TAG_MODEL_ID", "TAG_MODEL_SHA", "TAG_MODEL_URI", "TAG_SOURCE",
    "TAG_SOURCE_EFFECTIVE", "TAG_SYMBOL", "TAG_VERSION",
    "CachedModel", "Catalog", "Connection", "DataProvenance", "Lease", "LeaseManager", "MlflowMetricsSink",
    "ModelBundle", "ModelStatus", "ModelStore", "ModelURI", "RequestStatus",
    "check_config_hash", "default_store", "is_stale", "load_bundle", "load_model", "parse_model_uri",
    "prepare_tracking", "record_from_run", "resolve_tracking_uri", "validate_model_uri",
]

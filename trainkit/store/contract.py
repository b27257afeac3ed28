"""The MLflow contract: every name trainkit writes into a tracking store or reads back from it.

Other people's scripts, dashboards and saved searches rely on these strings, and the models
already in users' stores carry them, so they never change silently: ``tests/test_contract.py``
pins each one to its literal. Stdlib only, so the CLI can validate a URI or a hash before
anything heavy is imported or any store is opened.

What lives here, and only here:

* experiment names and the model's artifact name;
* every tag (and the params read back from a run);
* the two status vocabularies (a stored model's status vs what one request did);
* the one model-URI grammar (:func:`parse_model_uri`) and registry-name rules;
* the one config-hash check (:func:`check_config_hash`) and the filter-string quoting.

See docs/ARCHITECTURE.md, "The MLflow contract".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from collections.abc import Mapping
from typing import Final, Literal

from trainkit.errors import ConfigError, ModelURIError

# ------------------------------------------------------------------------------- experiments
DEFAULT_EXPERIMENT: Final = "trainkit"  #: where models (the cache) live
BACKTEST_EXPERIMENT: Final = "trainkit-backtests"  #: one run per backtest
WALKFORWARD_EXPERIMENT: Final = "trainkit-walkforward"  #: one parent run per walk-forward
TUNE_EXPERIMENT: Final = "trainkit-tune"  #: one run per study (and symbol), a nested run per trial
PROMOTION_EXPERIMENT: Final = "trainkit-promotions"  #: one run per alias move of `trainkit promote`
MODEL_NAME: Final = "model"  #: runs:/<run_id>/model
LOGGED_MODEL_TYPE: Final = "trainkit-sb3"  #: model_type of trainkit's LoggedModels

# ------------------------------------------------------------------- tags of a training run
# the public part (README, docs/ARCHITECTURE.md): users filter and read these
TAG_HASH: Final = "config_hash"  #: 64 hex chars; only on runs whose model was published
TAG_SYMBOL: Final = "trainkit.symbol"
TAG_SOURCE: Final = "trainkit.data_source"  #: the source requested
TAG_SOURCE_EFFECTIVE: Final = "trainkit.data_source_effective"  #: the source used
TAG_FALLBACK_REASON: Final = "trainkit.fallback_reason"  #: set only when it fell back
TAG_DATA_DIGEST: Final = "trainkit.data_digest"  #: sha256 of the prices trained on
TAG_MODEL_SHA: Final = "trainkit.model_sha256"  #: sha256 of policy.zip
TAG_VERSION: Final = "trainkit.version"
# trainkit's bookkeeping on the same runs
TAG_MODEL_ID: Final = "trainkit.model_id"  #: the LoggedModel (models:/m-…)
TAG_MODEL_URI: Final = "trainkit.model_uri"
TAG_CLAIM: Final = "trainkit.claim_hash"  #: a live lease (a RUNNING run reserving a hash)
TAG_HEARTBEAT: Final = "trainkit.heartbeat"  #: unix seconds of the lease's last heartbeat
TAG_CLAIM_STATE: Final = "trainkit.claim_state"  #: CLAIM_STATE_TRAINING once a lease won its tie
TAG_BROKEN: Final = "trainkit.broken"  #: the model failed verification; never served
TAG_FAILURE: Final = "trainkit.failure"  #: why a lease ended without a model
CLAIM_STATE_TRAINING: Final = "training"
# MLflow's own tags that trainkit writes
TAG_NOTE: Final = "mlflow.note.content"  #: the run's description in the UI
TAG_PARENT_RUN: Final = "mlflow.parentRunId"  #: nests a run under another in the UI
TAG_MODEL_VERSIONS: Final = "mlflow.modelVersions"  #: on a LoggedModel: JSON list of its registered versions
TAG_USER: Final = "mlflow.user"  #: who made a run (a promotion record: who moved the alias)
TAG_EXPERIMENT_KIND: Final = "mlflow.experimentKind"  #: set only on the experiments trainkit creates
EXPERIMENT_KIND: Final = "custom_model_development"  #: the UI's "Machine learning" kind (not GenAI)

# ---------------------------------------------------------------------------- the MLflow UI
# The pages trainkit links to, after the tracking server's address (checked on MLflow 3.17's UI).
# That UI opens in its GenAI view unless the link says workflowType=machine_learning (it reads the
# URL, then the browser's last choice; not TAG_EXPERIMENT_KIND).
UI_RUN: Final = "#/experiments/{experiment_id}/runs/{run_id}?workflowType=machine_learning"
UI_MODEL: Final = "#/experiments/{experiment_id}/models/{model_id}?workflowType=machine_learning"
UI_MODEL_VERSION: Final = "#/models/{name}/versions/{version}?workflowType=machine_learning"


def linked_model(model_uri: str, model_id: str | None, run_id: str, experiment_id: str | None) -> tuple[str, str]:
    """A model and its training run as a run's description shows them: markdown links to their
    UI pages when the experiment is known, else code. A run page's "Logged models" table lists
    only models of the run's own experiment (MLflow 3.17), and evaluations live in other
    experiments than their models: these links are the one click from a fold or a backtest to
    its model. Relative, so they open on whatever address the server has."""
    model = f"`{model_uri}`" + (f" = `models:/{model_id}`" if model_id else "")
    run = f"`{run_id}`"
    if experiment_id:
        if model_id:
            model = f"[{model}]({UI_MODEL.format(experiment_id=experiment_id, model_id=model_id)})"
        run = f"[{run}]({UI_RUN.format(experiment_id=experiment_id, run_id=run_id)})"
    return model, run

# ----------------------------------------------------------------------------- renamed tags
#: **The legacy-name convention.** A tag is never renamed in place: the new name becomes the
#: TAG_* constant, and the old literal is kept here forever, current name -> the names older
#: trainkit versions wrote (newest first), as MLflow keeps its ``LEGACY_*`` tag names
#: (``mlflow/utils/mlflow_tags.py``). Readers see a run's tags through :func:`current_tags`
#: and searches try every spelling (:func:`tag_spellings`), so a store written by an older
#: trainkit keeps answering. ``tests/test_contract.py`` shows it on a real store.
LEGACY_TAGS: dict[str, tuple[str, ...]] = {}


def tag_spellings(name: str) -> tuple[str, ...]:
    """Every name a tag has been written under: the current one first."""
    return (name, *LEGACY_TAGS.get(name, ()))


def current_tags(tags: Mapping[str, str]) -> dict[str, str]:
    """A run's tags under their current names (a current tag wins over a legacy spelling)."""
    out = dict(tags)
    for name, olds in LEGACY_TAGS.items():
        if name not in out:
            old = next((o for o in olds if o in out), None)
            if old is not None:
                out[name] = out[old]
    return out


# ---------------------------------------------------------------------- tags of other runs
# backtest runs (experiment trainkit-backtests); TAG_MODEL_URI, TAG_SYMBOL, TAG_SOURCE,
# TAG_SOURCE_EFFECTIVE, TAG_DATA_DIGEST, TAG_FALLBACK_REASON, TAG_MODEL_ID, TAG_VERSION too
TAG_SOURCE_RUN_ID: Final = "trainkit.source_run_id"  #: the training run of the model
TAG_SOURCE_CONFIG_HASH: Final = "trainkit.source_config_hash"
TAG_IN_SAMPLE: Final = "trainkit.in_sample"  #: "true" when the window overlaps training
TAG_SOURCE_OVERRIDE: Final = "trainkit.data_source_override"
TAG_BACKTEST_KEY: Final = "trainkit.backtest_key"  #: sha256 naming a cached backtest
# walk-forward parent runs (experiment trainkit-walkforward); folds are nested under them
TAG_WALKFORWARD_KEY: Final = "trainkit.walkforward_key"  #: sha256 of the spec and its folds' backtest keys
# studies of `trainkit tune` (experiment trainkit-tune): a study run, its trials nested under it
TAG_STUDY: Final = "trainkit.study"  #: the study's name, on the study run and on each trial run
TAG_STUDY_IDENTITY: Final = "trainkit.study_identity"  #: JSON: what a study is (symbol, window, options, space, objective)
TAG_WINDOW_KEY: Final = "trainkit.window_key"  #: sha256 of (symbol, window): configs tried on the same data
TAG_TRIAL_NUMBER: Final = "trainkit.trial_number"
TAG_TRIAL_STATE: Final = "trainkit.trial_state"  #: one of TRIAL_STATES
TAG_TRIAL_PARAMS: Final = "trainkit.trial_params"  #: JSON of the sampled values (as the sampler sees them)
TAG_TRIAL_RUNNING: Final = "trainkit.trial_running"  #: JSON fold -> running out-of-sample value
TAG_TRIAL_ATTEMPTS: Final = "trainkit.trial_attempts"  #: how many times the trial was started
TAG_CONFIG_KEY: Final = "trainkit.config_key"  #: sha256 of a trial's train options (its config without window and seed)
TAG_WALKFORWARD_RUN_ID: Final = "trainkit.walkforward_run_id"  #: the walk-forward a trial read or created
#: a trial's states (Optuna's, lower-case)
TRIAL_STATES: Final = ("running", "complete", "pruned", "fail")
#: the states that count toward a study's total (--trials); failed trials are taken up again
COUNTED_TRIAL_STATES: Final = ("complete", "pruned")
# the evidence a promoted model version carries (and its promotion record, experiment trainkit-promotions)
TAG_PROMOTED: Final = "trainkit.promoted"  #: "true" once the alias points at the version; "false" until then
TAG_DEFLATED_SHARPE: Final = "trainkit.deflated_sharpe"  #: at promotion, over TAG_N_CONFIGS configs
TAG_PBO: Final = "trainkit.pbo"  #: at promotion ("" when there were fewer than 4 candidates)
TAG_N_CONFIGS: Final = "trainkit.n_configs"  #: the configs tried on the window when it was promoted
TAG_SHARPE: Final = "trainkit.sharpe"  #: the raw out-of-sample Sharpe (annualised) of its walk-forward
TAG_GATE: Final = "trainkit.gate"  #: the gates it passed, e.g. "deflated_sharpe>=0.95"
# promotion records: one run per alias move (who is the run's mlflow.user, when its start time)
TAG_REGISTERED_NAME: Final = "trainkit.registered_name"
TAG_ALIAS: Final = "trainkit.alias"
TAG_ACTION: Final = "trainkit.action"  #: one of PROMOTION_ACTIONS
TAG_FROM_VERSION: Final = "trainkit.from_version"  #: "" when the alias pointed nowhere
TAG_TO_VERSION: Final = "trainkit.to_version"
PROMOTION_ACTIONS: Final = ("promote", "rollback")
# project runs of `mlflow run` in another experiment (they point at what served them)
TAG_MODEL_RUN_ID: Final = "trainkit.model_run_id"
TAG_CACHE_HIT: Final = "trainkit.cache_hit"
TAG_BACKTEST_RUN_ID: Final = "trainkit.backtest_run_id"

# ------------------------------------------------------------------------------ params read
# A training run's params are every TrainConfig field (TrainConfig.to_params); these are the
# ones read back to describe a model without downloading it.
PARAM_SYMBOL: Final = "symbol"
PARAM_ALGO: Final = "algo"
PARAM_TRAIN_START: Final = "train_start"
PARAM_TRAIN_END: Final = "train_end"
PARAM_TIMESTEPS: Final = "timesteps"
PARAM_FEATURE_COUNT: Final = "feature_count"
PARAM_DATA_SOURCE: Final = "data_source"
PARAM_DATA_SEED: Final = "data_seed"
#: params of a backtest run, in order
BACKTEST_PARAMS: Final = (
    "model_uri", "start", "end", "first_day", "last_day", "n_days", "data_source", "data_source_override",
    "cost_bps", "allow_short", "feature_count",
)


#: params of a walk-forward parent run (then every TrainConfig param but the window and the seed)
WALKFORWARD_PARAMS: Final = (
    "symbol", "start", "end", "anchor", "train_window", "test_window", "step", "mode", "embargo", "seeds", "n_folds",
)
#: params of a walk-forward fold's child run
FOLD_PARAMS: Final = (
    "fold", "seed", "train_start", "train_end", "test_start", "test_end", "first_day", "last_day", "n_days",
    "model_uri", "config_hash", "status",
)


# ------------------------------------------------------------------------------ statuses
class ModelStatus:
    """What a *stored* model is (``trainkit list``, :class:`~trainkit.store.CachedModel`)."""

    READY: Final = "ready"  #: trained on the source it asked for; served
    FALLBACK: Final = "fallback"  #: trained on synthetic data because the source failed; served, loudly
    TRAINING: Final = "training"  #: a live lease: being trained now; never served
    BROKEN: Final = "broken"  #: failed verification; kept for inspection, never served
    ALL: Final = (READY, FALLBACK, TRAINING, BROKEN)


class RequestStatus:
    """What *one request* did (``train --json`` rows, :class:`~trainkit.manager.ModelResult`)."""

    CACHED: Final = "cached"  #: served from the cache
    TRAINED: Final = "trained"  #: trained now, on the requested source
    FALLBACK: Final = "fallback"  #: trained now, on synthetic fallback data
    ALL: Final = (CACHED, TRAINED, FALLBACK)


# ------------------------------------------------------------------------------- config hash
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def is_config_hash(value: object) -> bool:
    """True for a full config hash (64 lower-case hex characters)."""
    return isinstance(value, str) and bool(_HEX64.match(value))


def check_config_hash(value: object, what: str = "config hash") -> str:
    """The hash, stripped and lower-cased, or :class:`ConfigError` (exit 2) saying where to
    find a full one. The only place trainkit decides what a config hash looks like."""
    text = str(value if value is not None else "").strip().lower()
    if not _HEX64.match(text):
        raise ConfigError(f"{what} {value!r} must be the full 64-hex-character hash (see `trainkit list --json`)")
    return text


# -------------------------------------------------------------------------------- model URIs
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")
_MODEL_ID = re.compile(r"^m-[0-9a-f]{32}$")
_REG_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-^=]{0,99}$")
_ALIAS = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]{0,254}$")
_RESERVED_ALIAS = re.compile(r"^(v\d+|latest)$", re.IGNORECASE)

URIKind = Literal["run", "logged_model", "version", "alias"]


@dataclass(frozen=True)
class ModelURI:
    """A parsed model URI. ``kind`` says which of the four shapes it has:

    * ``run`` — ``runs:/<run_id>/model`` (``run_id``)
    * ``logged_model`` — ``models:/m-<32 hex>`` (``model_id``)
    * ``version`` — ``models:/<name>/<version>`` (``name``, ``version``)
    * ``alias`` — ``models:/<name>@<alias>`` (``name``, ``alias``)
    """

    text: str
    kind: URIKind
    run_id: str | None = None
    model_id: str | None = None
    name: str | None = None
    version: str | None = None
    alias: str | None = None

    def __str__(self) -> str:
        return self.text


_SHAPES = "use runs:/<run_id>/model, models:/m-<id>, models:/<name>/<version> or models:/<name>@<alias>"


def parse_model_uri(uri: object) -> ModelURI:
    """The one model-URI grammar of trainkit: a :class:`ModelURI`, or :class:`ModelURIError`
    (exit 2) saying which shapes work. No I/O — validate before touching a store."""
    text = (uri if isinstance(uri, str) else "").strip()
    if text.startswith("runs:/"):
        run_id, sep, path = text[len("runs:/"):].partition("/")
        path = path.strip("/")
        if not sep or not run_id or not path:
            raise ModelURIError(f"invalid model URI {text!r}: expected runs:/<run_id>/{MODEL_NAME}")
        if not _RUN_ID.match(run_id):
            raise ModelURIError(f"invalid run id {run_id!r} in {text!r}: a run id is 32 hex characters")
        if path != MODEL_NAME:
            raise ModelURIError(f"trainkit models live at runs:/<run_id>/{MODEL_NAME}, not {path!r}")
        return ModelURI(text, "run", run_id=run_id)
    if text.startswith("models:/") and len(text) > len("models:/"):
        rest = text[len("models:/"):]
        if _MODEL_ID.match(rest):
            return ModelURI(text, "logged_model", model_id=rest)
        if "@" in rest:
            name, alias = rest.rsplit("@", 1)
            if _REG_NAME.match(name) and _ALIAS.match(alias):
                return ModelURI(text, "alias", name=name, alias=alias)
            raise ModelURIError(f"invalid model URI {text!r}: expected models:/<name>@<alias>")
        if "/" in rest:
            name, version = rest.rsplit("/", 1)
            if _REG_NAME.match(name) and version.isdigit():
                return ModelURI(text, "version", name=name, version=version)
            raise ModelURIError(f"invalid model URI {text!r}: expected models:/<name>/<version number>")
        raise ModelURIError(
            f"invalid model URI {text!r}: name a version (models:/{rest}/1) or an alias (models:/{rest}@champion)"
        )
    raise ModelURIError(f"invalid model URI {text!r}: not a model URI trainkit loads; {_SHAPES}")


def validate_model_uri(uri: object) -> str:
    """The URI, stripped, if :func:`parse_model_uri` accepts it."""
    return parse_model_uri(uri).text


def run_model_uri(run_id: str) -> str:
    """``runs:/<run_id>/model``: the URI of the model a training run published."""
    return f"runs:/{run_id}/{MODEL_NAME}"


def check_registered_name(name: object) -> str:
    """A Model Registry name trainkit will create, or :class:`ConfigError` (exit 2)."""
    text = str(name if name is not None else "").strip()
    if not _REG_NAME.match(text):
        raise ConfigError(f"invalid registered model name {name!r}: use letters, digits, . _ - (e.g. trainkit-AAPL)")
    return text


def check_alias(alias: object) -> str:
    """A registry alias trainkit will set, or :class:`ConfigError` (exit 2). ``latest`` and
    ``v<number>`` are reserved by MLflow."""
    text = str(alias if alias is not None else "").strip()
    if not _ALIAS.match(text) or _RESERVED_ALIAS.match(text):
        raise ConfigError(f"invalid alias {alias!r}: use a word such as champion (not latest or v<number>)")
    return text


# ---------------------------------------------------------------------------- filter strings
def quote(value: str) -> str:
    """Quote a value for an MLflow filter string. Values are validated before they get here;
    quoting is the second wall, so no input can widen a query."""
    if "'" in value or "\\" in value or "\n" in value:
        raise ConfigError(f"value {value!r} cannot be used in a query")
    return f"'{value}'"

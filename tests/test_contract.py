"""The MLflow contract, pinned: other people's scripts and the models already in users' stores
rely on these literals. Changing one of them must fail here first (and then needs a migration
story in the README, not just a new string)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from trainkit import settings
from trainkit.errors import ConfigError, ModelURIError
from trainkit.store import contract as C

REPO = Path(__file__).resolve().parent.parent

PINNED = {
    "DEFAULT_EXPERIMENT": "trainkit",
    "BACKTEST_EXPERIMENT": "trainkit-backtests",
    "WALKFORWARD_EXPERIMENT": "trainkit-walkforward",
    "TUNE_EXPERIMENT": "trainkit-tune",
    "PROMOTION_EXPERIMENT": "trainkit-promotions",
    "MODEL_NAME": "model",
    "LOGGED_MODEL_TYPE": "trainkit-sb3",
    "TAG_HASH": "config_hash",
    "TAG_SYMBOL": "trainkit.symbol",
    "TAG_SOURCE": "trainkit.data_source",
    "TAG_SOURCE_EFFECTIVE": "trainkit.data_source_effective",
    "TAG_FALLBACK_REASON": "trainkit.fallback_reason",
    "TAG_DATA_DIGEST": "trainkit.data_digest",
    "TAG_MODEL_SHA": "trainkit.model_sha256",
    "TAG_VERSION": "trainkit.version",
    "TAG_MODEL_ID": "trainkit.model_id",
    "TAG_MODEL_URI": "trainkit.model_uri",
    "TAG_CLAIM": "trainkit.claim_hash",
    "TAG_HEARTBEAT": "trainkit.heartbeat",
    "TAG_CLAIM_STATE": "trainkit.claim_state",
    "TAG_BROKEN": "trainkit.broken",
    "TAG_FAILURE": "trainkit.failure",
    "CLAIM_STATE_TRAINING": "training",
    "TAG_NOTE": "mlflow.note.content",
    "TAG_PARENT_RUN": "mlflow.parentRunId",
    "TAG_MODEL_VERSIONS": "mlflow.modelVersions",
    "TAG_USER": "mlflow.user",
    "TAG_EXPERIMENT_KIND": "mlflow.experimentKind",
    "EXPERIMENT_KIND": "custom_model_development",
    "UI_RUN": "#/experiments/{experiment_id}/runs/{run_id}?workflowType=machine_learning",
    "UI_MODEL": "#/experiments/{experiment_id}/models/{model_id}?workflowType=machine_learning",
    "UI_MODEL_VERSION": "#/models/{name}/versions/{version}?workflowType=machine_learning",
    "TAG_SOURCE_RUN_ID": "trainkit.source_run_id",
    "TAG_SOURCE_CONFIG_HASH": "trainkit.source_config_hash",
    "TAG_IN_SAMPLE": "trainkit.in_sample",
    "TAG_SOURCE_OVERRIDE": "trainkit.data_source_override",
    "TAG_BACKTEST_KEY": "trainkit.backtest_key",
    "TAG_WALKFORWARD_KEY": "trainkit.walkforward_key",
    "TAG_STUDY": "trainkit.study",
    "TAG_STUDY_IDENTITY": "trainkit.study_identity",
    "TAG_WINDOW_KEY": "trainkit.window_key",
    "TAG_TRIAL_NUMBER": "trainkit.trial_number",
    "TAG_TRIAL_STATE": "trainkit.trial_state",
    "TAG_TRIAL_PARAMS": "trainkit.trial_params",
    "TAG_TRIAL_RUNNING": "trainkit.trial_running",
    "TAG_TRIAL_ATTEMPTS": "trainkit.trial_attempts",
    "TAG_CONFIG_KEY": "trainkit.config_key",
    "TAG_WALKFORWARD_RUN_ID": "trainkit.walkforward_run_id",
    "WALKFORWARD_PARAMS": ("symbol", "start", "end", "anchor", "train_window", "test_window", "step", "mode",
                           "embargo", "seeds", "n_folds"),
    "FOLD_PARAMS": ("fold", "seed", "train_start", "train_end", "test_start", "test_end", "first_day", "last_day",
                    "n_days", "model_uri", "config_hash", "status"),
    "TAG_PROMOTED": "trainkit.promoted",
    "TAG_DEFLATED_SHARPE": "trainkit.deflated_sharpe",
    "TAG_PBO": "trainkit.pbo",
    "TAG_N_CONFIGS": "trainkit.n_configs",
    "TAG_SHARPE": "trainkit.sharpe",
    "TAG_GATE": "trainkit.gate",
    "TAG_REGISTERED_NAME": "trainkit.registered_name",
    "TAG_ALIAS": "trainkit.alias",
    "TAG_ACTION": "trainkit.action",
    "TAG_FROM_VERSION": "trainkit.from_version",
    "TAG_TO_VERSION": "trainkit.to_version",
    "PROMOTION_ACTIONS": ("promote", "rollback"),
    "TAG_MODEL_RUN_ID": "trainkit.model_run_id",
    "TAG_CACHE_HIT": "trainkit.cache_hit",
    "TAG_BACKTEST_RUN_ID": "trainkit.backtest_run_id",
    "PARAM_SYMBOL": "symbol",
    "PARAM_ALGO": "algo",
    "PARAM_TRAIN_START": "train_start",
    "PARAM_TRAIN_END": "train_end",
    "PARAM_TIMESTEPS": "timesteps",
    "PARAM_FEATURE_COUNT": "feature_count",
    "PARAM_DATA_SOURCE": "data_source",
    "PARAM_DATA_SEED": "data_seed",
    "BACKTEST_PARAMS": ("model_uri", "start", "end", "first_day", "last_day", "n_days", "data_source",
                        "data_source_override", "cost_bps", "allow_short", "feature_count"),
}


@pytest.mark.parametrize("name, literal", sorted(PINNED.items()))
def test_every_contract_name_keeps_its_literal(name: str, literal: object) -> None:
    assert getattr(C, name) == literal


def test_every_contract_constant_is_pinned() -> None:
    """A new tag or param must be added to PINNED (and so to the contract) deliberately."""
    declared = {n for n in vars(C) if re.fullmatch(r"(TAG|PARAM)_[A-Z_]+|[A-Z_]+_EXPERIMENT|MODEL_NAME|[A-Z_]+_PARAMS", n)}
    assert declared <= set(PINNED), sorted(declared - set(PINNED))


def test_status_vocabularies() -> None:
    assert C.ModelStatus.ALL == ("ready", "fallback", "training", "broken")
    assert C.RequestStatus.ALL == ("cached", "trained", "fallback")


def test_the_params_read_back_are_config_fields() -> None:
    from trainkit.config import TrainConfig

    fields = set(TrainConfig.__dataclass_fields__)
    read = {v for k, v in vars(C).items() if k.startswith("PARAM_")}
    assert read <= fields


def test_model_files_are_the_ones_the_pyfunc_file_reads() -> None:
    """One list of model files: the flavor's. The standalone pyfunc file reads exactly its keys."""
    from trainkit.store.flavor import MODEL_FILES

    assert MODEL_FILES == {"policy": "policy.zip", "config": "config.json", "feature_spec": "feature_spec.json",
                           "signals": "signals_core.py"}
    source = (REPO / "trainkit" / "pyfunc_model.py").read_text()
    keys = {node.slice.value for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant)
            and isinstance(node.value, ast.Attribute) and node.value.attr == "artifacts"}
    assert keys == set(MODEL_FILES)


def test_no_literal_tag_strings_outside_the_contract() -> None:
    """Tag names are written once: any other module quoting "trainkit.<tag>" is a second copy."""
    offenders = []
    for path in (REPO / "trainkit").rglob("*.py"):
        if path.name in ("contract.py", "settings.py"):
            continue
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if re.search(r"""["'](trainkit\.(symbol|data_source|model_uri|model_id|claim_hash|heartbeat|broken|failure|version|"""
                         r"""fallback_reason|data_digest|model_sha256|source_run_id|cache_hit|model_run_id))["']\s*[:,)\]]""", code):
                if "json" in code or "to_dict" in code:
                    continue
                offenders.append(f"{path.relative_to(REPO)}:{lineno}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


# ----------------------------------------------------------------------------- URI grammar
@pytest.mark.parametrize(
    "uri, kind, parts",
    [
        ("runs:/0123456789abcdef0123456789abcdef/model", "run", {"run_id": "0123456789abcdef0123456789abcdef"}),
        ("models:/m-0123456789abcdef0123456789abcdef", "logged_model", {"model_id": "m-0123456789abcdef0123456789abcdef"}),
        ("models:/trainkit-AAPL/3", "version", {"name": "trainkit-AAPL", "version": "3"}),
        ("models:/trainkit-AAPL@champion", "alias", {"name": "trainkit-AAPL", "alias": "champion"}),
    ],
)
def test_parse_model_uri(uri: str, kind: str, parts: dict) -> None:
    parsed = C.parse_model_uri("  " + uri + " ")
    assert parsed.kind == kind and parsed.text == uri
    for k, v in parts.items():
        assert getattr(parsed, k) == v


def test_one_uri_grammar_everywhere() -> None:
    """The backtest validator and the CLI use the contract's parser: same answers."""
    from trainkit.backtest import _validate

    for bad in ("runs:/abc/model", "models:/name", "s3://bucket/x"):
        with pytest.raises(ModelURIError):
            C.parse_model_uri(bad)
        with pytest.raises(ModelURIError):
            _validate(bad, "2020-01-01", "2020-06-30", None)


def test_config_hash_check() -> None:
    h = "A" * 64
    assert C.check_config_hash(" " + h + " ") == "a" * 64
    for bad in ("abc", "g" * 64, "a" * 63, None):
        with pytest.raises(ConfigError, match="64-hex"):
            C.check_config_hash(bad)


def test_registry_names_and_aliases() -> None:
    assert C.check_registered_name("trainkit-AAPL") == "trainkit-AAPL"
    with pytest.raises(ConfigError):
        C.check_registered_name("bad name")
    assert C.check_alias("champion") == "champion"
    for bad in ("latest", "v3", "1x", "with space"):
        with pytest.raises(ConfigError):
            C.check_alias(bad)


# ----------------------------------------------------------------------------- settings
def test_settings_are_declared_once_and_read_nowhere_else() -> None:
    names = {s.name for s in settings.ALL}
    assert {"TRAINKIT_HEARTBEAT", "TRAINKIT_STALE_AFTER", "TRAINKIT_CLAIM_SETTLE", "TRAINKIT_CACHE_DIR",
            "TRAINKIT_YF_TIMEOUT", "TRAINKIT_YF_PROXY", "TRAINKIT_SERVER_RETRY_S", "TRAINKIT_REGISTERED_NAME"} <= names
    offenders = []
    for path in (REPO / "trainkit").rglob("*.py"):
        if path.name == "settings.py":
            continue
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"""environ(\.get)?\s*[\[(]\s*["'](TRAINKIT|MLFLOW)_""", line) or re.search(r"""getenv\(\s*["'](TRAINKIT|MLFLOW)_""", line):
                offenders.append(f"{path.relative_to(REPO)}:{lineno}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


@pytest.mark.parametrize(
    "env, needle",
    [
        ({"TRAINKIT_HEARTBEAT": "abc"}, "TRAINKIT_HEARTBEAT='abc' is not a number"),
        ({"TRAINKIT_STALE_AFTER": "-1"}, "TRAINKIT_STALE_AFTER='-1' is out of range"),
        ({"TRAINKIT_HEARTBEAT": "60", "TRAINKIT_STALE_AFTER": "90"}, "at most half of TRAINKIT_STALE_AFTER"),
        ({"TRAINKIT_YF_TIMEOUT": "0"}, "TRAINKIT_YF_TIMEOUT='0' is out of range"),
        ({"TRAINKIT_CLAIM_SETTLE": "nan"}, "TRAINKIT_CLAIM_SETTLE='nan' is not a number"),
        ({"MLFLOW_HTTP_REQUEST_TIMEOUT": "ten"}, "MLFLOW_HTTP_REQUEST_TIMEOUT='ten' is not a whole number"),
    ],
)
def test_one_rule_for_invalid_settings(monkeypatch: pytest.MonkeyPatch, env: dict, needle: str) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ConfigError) as info:
        settings.check()
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_valid_settings_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAINKIT_HEARTBEAT", "0.5")
    monkeypatch.setenv("TRAINKIT_STALE_AFTER", "3")
    settings.check()
    assert settings.TRAINKIT_HEARTBEAT.get() == 0.5 and settings.TRAINKIT_STALE_AFTER.get() == 3.0

"""The search space of ``trainkit tune`` (trainkit/search/space.py): the default spaces only
yield hyperparameters TrainConfig accepts and contain the calibrated defaults; space files are
read from YAML or JSON alike and every mistake in them is one actionable line; a space's
canonical name does not depend on how its file was written. Fast: real Optuna, no training."""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import optuna
import pytest

from trainkit.algorithms import algorithm_spec
from trainkit.config import TrainConfig
from trainkit.errors import ConfigError
from trainkit.search.space import KINDS, Dimension, SearchSpace, default_space, load_space, parse_space

ALGOS = ("ppo", "a2c", "dqn")
MODULE = Path(__file__).resolve().parent.parent / "trainkit" / "search" / "space.py"

optuna.logging.set_verbosity(optuna.logging.WARNING)


def sample(space: SearchSpace, n: int, seed: int = 0) -> list[dict]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(n):
        trial = study.ask(space.distributions())
        out.append(space.to_hyperparams(trial.params))
        study.tell(trial, 0.0)
    return out


def config(algo: str, hp: dict) -> TrainConfig:
    return TrainConfig.create("AAPL", "2015-01-02", "2017-12-29", algo=algo, data_source="synthetic", hyperparams=hp)


# ----------------------------------------------------------------------------- default spaces
@pytest.mark.parametrize("algo", ALGOS)
def test_default_space_searches_hyperparameters_of_its_algorithm_and_contains_its_defaults(algo: str) -> None:
    space = default_space(algo)
    defaults = algorithm_spec(algo).defaults
    assert space.algo == algo and space.names()
    assert space.names() == tuple(sorted(space.names()))
    assert set(space.names()) <= set(defaults)
    assert "n_envs" not in space.names()  # a speed calibration, not a learning choice
    for dim in space.dimensions:
        assert dim.kind in KINDS
        assert dim.contains(defaults[dim.name]), (dim, defaults[dim.name])
    # the defaults are a valid first trial: they encode into the space and decode back
    params = space.from_hyperparams(defaults)
    assert set(params) == set(space.names())
    for name, value in params.items():
        assert space.distributions()[name]._contains(space.distributions()[name].to_internal_repr(value))
    assert space.to_hyperparams(params) == {n: defaults[n] for n in space.names()}


@pytest.mark.parametrize(("algo", "base"), [
    ("ppo", None), ("ppo", {"n_envs": 8}), ("ppo", {"n_envs": 1}), ("ppo", {"n_envs": 256}),
    ("a2c", None), ("a2c", {"n_envs": 8}), ("dqn", None), ("dqn", {"buffer_size": 1000}),
])
def test_every_sample_of_a_default_space_is_a_config_trainkit_accepts(algo: str, base: dict | None) -> None:
    space = default_space(algo, base)
    seen: dict[str, set] = {n: set() for n in space.names()}
    for hp in sample(space, 200):
        assert set(hp) == set(space.names())
        config(algo, {**(base or {}), **hp})  # raises ConfigError on an impossible combination
        for name, value in hp.items():
            seen[name].add(json.dumps(value))
    assert all(len(values) > 1 or len({d.name: d for d in space.dimensions}[n].choices) == 1 for n, values in seen.items())


def test_ppo_batch_sizes_divide_the_smallest_rollout_of_the_users_envs() -> None:
    batches = {d.name: d for d in default_space("ppo").dimensions}["batch_size"].choices
    assert batches == (512, 1024, 2048)  # 128 envs x 16 steps = 2048
    for n_envs in (1, 3, 8, 32, 128, 256):
        space = default_space("ppo", {"n_envs": n_envs, "learning_rate": 0.5})
        dims = {d.name: d for d in space.dimensions}
        rollout = n_envs * min(dims["n_steps"].choices)
        assert dims["batch_size"].choices, n_envs
        assert all(rollout % b == 0 for b in dims["batch_size"].choices), (n_envs, dims["batch_size"])
    assert {d.name: d for d in default_space("ppo", {"n_envs": 8}).dimensions}["batch_size"].choices == (128,)
    assert {d.name: d for d in default_space("ppo", {"n_envs": "8"}).dimensions}["batch_size"].choices == (128,)


def test_dqn_batch_sizes_stay_within_the_buffer() -> None:
    dims = {d.name: d for d in default_space("dqn", {"buffer_size": 1500}).dimensions}
    assert dims["batch_size"].choices == (512, 1024)
    dims = {d.name: d for d in default_space("dqn", {"buffer_size": 100}).dimensions}
    assert dims["batch_size"].choices == (100,)


def test_default_space_of_an_unknown_algorithm_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown algorithm"):
        default_space("sac")


# ----------------------------------------------------------------------------- dimensions
def test_net_arch_is_encoded_as_a_string_for_optuna_and_decoded_back_to_a_list() -> None:
    dim = {d.name: d for d in default_space("ppo").dimensions}["net_arch"]
    assert dim.choices == ((32, 32), (64, 64), (128, 128))
    dist = dim.distribution()
    assert isinstance(dist, optuna.distributions.CategoricalDistribution)
    assert dist.choices == ("32-32", "64-64", "128-128")
    assert dim.encode([64, 64]) == "64-64" and dim.encode((128, 128)) == "128-128"
    assert dim.decode("64-64") == [64, 64]
    for choice in dim.choices:
        assert dim.decode(dim.encode(list(choice))) == list(choice)
    assert dim.contains([64, 64]) and dim.contains((32, 32))
    assert not dim.contains([64]) and not dim.contains("64-64") and not dim.contains(64)
    assert dim.to_dict() == {"type": "categorical", "choices": [[32, 32], [64, 64], [128, 128]]}


def test_distributions_follow_kind_log_and_step() -> None:
    f = Dimension("learning_rate", "float", 1e-4, 3e-3, log=True).distribution()
    assert isinstance(f, optuna.distributions.FloatDistribution) and f.log and f.step is None
    assert (f.low, f.high) == (1e-4, 3e-3)
    i = Dimension("n_epochs", "int", 2, 8).distribution()
    assert isinstance(i, optuna.distributions.IntDistribution) and i.step == 1 and not i.log
    i = Dimension("n_epochs", "int", 2, 8, step=2).distribution()
    assert i.step == 2
    g = Dimension("gae_lambda", "float", 0.8, 1.0, step=0.05).distribution()
    assert g.step == 0.05
    c = Dimension("gamma", "categorical", choices=(0.9, 0.99)).distribution()
    assert c.choices == (0.9, 0.99)


def test_contains_respects_range_step_and_type() -> None:
    dim = Dimension("n_epochs", "int", 2, 8, step=2)
    assert dim.contains(4) and dim.contains(8) and not dim.contains(5)
    assert not dim.contains(10) and not dim.contains(4.5) and not dim.contains(True)
    lr = Dimension("learning_rate", "float", 1e-4, 3e-3, log=True)
    assert lr.contains(1e-3) and not lr.contains(1e-2) and not lr.contains(float("nan"))
    gamma = Dimension("gamma", "categorical", choices=(0.9, 0.99))
    assert gamma.contains(0.9) and not gamma.contains(0.95)


def test_to_hyperparams_refuses_a_parameter_of_another_space() -> None:
    with pytest.raises(ConfigError, match="clip_range"):
        default_space("ppo").to_hyperparams({"clip_range": 0.2})
    assert default_space("ppo").from_hyperparams({"n_envs": 8, "gamma": 0.9}) == {"gamma": 0.9}


def test_describe_is_one_short_line_per_dimension() -> None:
    lines = default_space("ppo").describe()
    assert len(lines) == len(default_space("ppo").dimensions)
    assert any(line.startswith("learning_rate") and "float 1e-4..3e-3 log" in line for line in lines)
    assert any(line.startswith("net_arch") and "categorical 32-32 | 64-64 | 128-128" in line for line in lines)
    assert any("int 2..8" in line for line in lines)


# ----------------------------------------------------------------------------- space files
YAML_SPACE = """\
# a user space
net_arch: {type: categorical, choices: [[128, 128], [64, 64]]}
learning_rate:
  log: true
  high: 3.0e-3
  type: float
  low: 1e-4          # PyYAML reads this as a string: accepted as a number
n_epochs: {type: int, low: 2, high: 8, step: 2}
gamma: {type: categorical, choices: [0.99, 0.9]}
"""

JSON_SPACE = {
    "gamma": {"choices": [0.9, 0.99], "type": "categorical"},
    "learning_rate": {"type": "float", "low": 0.0001, "high": 0.003, "log": True},
    "n_epochs": {"high": 8, "low": 2.0, "type": "int", "step": 2},
    "net_arch": {"type": "categorical", "choices": [[64, 64], [128, 128]]},
}


def test_yaml_and_json_files_name_the_same_space(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text(YAML_SPACE)
    (tmp_path / "s.json").write_text(json.dumps(JSON_SPACE))
    (tmp_path / "s.space").write_text(json.dumps(JSON_SPACE))  # no known extension: JSON first
    (tmp_path / "y.space").write_text(YAML_SPACE)  # ... then YAML
    spaces = [load_space(str(tmp_path / n), "ppo") for n in ("s.yaml", "s.json", "s.space", "y.space")]
    assert len({s.canonical() for s in spaces}) == 1
    assert spaces[0] == spaces[1]
    assert spaces[0].names() == ("gamma", "learning_rate", "n_epochs", "net_arch")
    assert json.loads(spaces[0].canonical())["algo"] == "ppo"


def test_canonical_does_not_depend_on_key_or_choice_order() -> None:
    reordered = {k: dict(reversed(list(v.items()))) for k, v in reversed(list(JSON_SPACE.items()))}
    reordered["gamma"]["choices"] = [0.99, 0.9]
    a, b = parse_space(JSON_SPACE, "ppo"), parse_space(reordered, "ppo")
    assert a.canonical() == b.canonical() and a == b
    a2c = {k: v for k, v in JSON_SPACE.items() if k != "n_epochs"}
    assert parse_space(a2c, "a2c").canonical() != parse_space(a2c, "ppo").canonical()
    assert a.canonical() != parse_space({**JSON_SPACE, "n_epochs": {"type": "int", "low": 2, "high": 6}}, "ppo").canonical()


@pytest.mark.parametrize("algo", ALGOS)
def test_a_space_reads_back_from_its_file_form(algo: str, tmp_path: Path) -> None:
    space = default_space(algo)
    assert parse_space(space.to_dict(), algo) == space
    path = tmp_path / "space.json"
    path.write_text(json.dumps(space.to_dict()))
    assert load_space(str(path), algo).canonical() == space.canonical()


def test_categorical_values_are_coerced_like_the_config_does() -> None:
    space = parse_space({"n_steps": {"type": "categorical", "choices": ["16", 32.0]},
                         "gamma": {"type": "categorical", "choices": ["0.9", 1]}}, "ppo")
    dims = {d.name: d for d in space.dimensions}
    assert dims["n_steps"].choices == (16, 32) and all(type(c) is int for c in dims["n_steps"].choices)
    assert dims["gamma"].choices == (0.9, 1.0) and all(type(c) is float for c in dims["gamma"].choices)


def _one_line_naming(exc: pytest.ExceptionInfo, *names: str) -> None:
    message = str(exc.value)
    assert "\n" not in message, message
    for name in names:
        assert name in message, (name, message)


@pytest.mark.parametrize(("doc", "names"), [
    (["learning_rate"], ["the space", "mapping"]),
    ("learning_rate: 1", ["the space", "mapping"]),
    ({}, ["the space", "empty"]),
    (None, ["the space"]),
    ({"learning_rat": {"type": "float", "low": 1e-4, "high": 1e-3}}, ["learning_rat", "learning_rate"]),
    ({"n_envs": {"type": "int", "low": 1, "high": 999}}, ["n_envs", "high"]),
    ({"gamma": [0.9, 0.99]}, ["gamma", "mapping"]),
    ({"gamma": {"low": 0.8, "high": 0.99}}, ["gamma", "type"]),
    ({"gamma": {"type": "uniform", "low": 0.8, "high": 0.99}}, ["gamma", "uniform"]),
    ({"gamma": {"type": "float", "low": 0.8}}, ["gamma", "high"]),
    ({"gamma": {"type": "float", "high": 0.99}}, ["gamma", "low"]),
    ({"gamma": {"type": "float", "low": 0.99, "high": 0.8}}, ["gamma", "empty range"]),
    ({"gamma": {"type": "float", "low": 0.9, "high": 0.9}}, ["gamma", "one value", "--hp"]),
    ({"n_epochs": {"type": "int", "low": 4, "high": 4}}, ["n_epochs", "one value", "--hp"]),
    ({"n_epochs": {"type": "int", "low": 8, "high": 2}}, ["n_epochs", "empty range"]),
    ({"ent_coef": {"type": "float", "low": 0, "high": 0.1, "log": True}}, ["ent_coef", "log", "low"]),
    ({"learning_rate": {"type": "float", "low": 1e-4, "high": 1e-3, "log": True, "step": 1e-4}},
     ["learning_rate", "log", "step"]),
    ({"n_epochs": {"type": "int", "low": 2, "high": 8, "log": True, "step": 2}}, ["n_epochs", "log", "step"]),
    ({"n_epochs": {"type": "int", "low": 2, "high": 8, "step": 0}}, ["n_epochs", "step"]),
    ({"gamma": {"type": "float", "low": 0.8, "high": 0.99, "step": -0.01}}, ["gamma", "step"]),
    ({"n_epochs": {"type": "int", "low": 2, "high": 8, "step": 4}}, ["n_epochs", "multiple of step"]),
    ({"n_epochs": {"type": "int", "low": 1.5, "high": 8}}, ["n_epochs", "low", "whole number"]),
    ({"n_epochs": {"type": "int", "low": 2, "high": 8.5}}, ["n_epochs", "high", "whole number"]),
    ({"n_epochs": {"type": "int", "low": 2, "high": 8, "step": 1.5}}, ["n_epochs", "step", "whole number"]),
    ({"n_epochs": {"type": "int", "low": "two", "high": 8}}, ["n_epochs", "low", "two"]),
    ({"n_epochs": {"type": "int", "low": 2, "high": float("inf")}}, ["n_epochs", "high", "finite"]),
    ({"gamma": {"type": "categorical"}}, ["gamma", "choices"]),
    ({"gamma": {"type": "categorical", "choices": []}}, ["gamma", "choices"]),
    ({"gamma": {"type": "categorical", "choices": 0.9}}, ["gamma", "choices"]),
    ({"gamma": {"type": "categorical", "choices": [0.9, 0.99, 0.9]}}, ["gamma", "duplicate", "0.9"]),
    ({"n_steps": {"type": "categorical", "choices": [16, "16"]}}, ["n_steps", "duplicate", "16"]),
    ({"net_arch": {"type": "categorical", "choices": [[64, 64], [64, 64]]}}, ["net_arch", "duplicate", "64-64"]),
    ({"gamma": {"type": "float", "lo": 0.8, "high": 0.99}}, ["gamma", "lo"]),
    ({"gamma": {"type": "float", "low": 0.8, "high": 0.99, "choices": [0.9]}}, ["gamma", "choices"]),
    ({"gamma": {"type": "categorical", "choices": [0.9], "low": 0.8}}, ["gamma", "low"]),
    ({"gamma": {"type": "float", "low": True, "high": 0.99}}, ["gamma", "low", "boolean"]),
    ({"n_epochs": {"type": "int", "low": 2, "high": 8, "log": 1}}, ["n_epochs", "log", "true or false"]),
    ({"n_steps": {"type": "categorical", "choices": [16, True]}}, ["n_steps", "True"]),
    ({"gamma": {"type": "categorical", "choices": [0.9, False]}}, ["gamma", "False"]),
    ({"gamma": {"type": "categorical", "choices": [0.9, 1.5]}}, ["gamma", "1.5", "0..1"]),
    ({"gamma": {"type": "float", "low": 0.9, "high": 1.5}}, ["gamma", "high", "0..1"]),
    ({"learning_rate": {"type": "float", "low": -1, "high": 1e-3}}, ["learning_rate", "low", "> 0"]),
    ({"n_steps": {"type": "categorical", "choices": [16, 0]}}, ["n_steps", "0", "> 0"]),
    ({"n_steps": {"type": "categorical", "choices": [16, 16.5]}}, ["n_steps", "16.5"]),
    ({"n_steps": {"type": "float", "low": 16, "high": 64}}, ["n_steps", "int or categorical"]),
    ({"gamma": {"type": "int", "low": 0, "high": 1}}, ["gamma", "float or categorical"]),
    ({"net_arch": {"type": "int", "low": 32, "high": 64}}, ["net_arch", "categorical"]),
    ({"net_arch": {"type": "categorical", "choices": [64, 128]}}, ["net_arch", "64", "positive integers"]),
    ({"net_arch": {"type": "categorical", "choices": [[64, 0]]}}, ["net_arch", "positive integers"]),
    ({"net_arch": {"type": "categorical", "choices": [[64, 64.5]]}}, ["net_arch", "positive integers"]),
    ({"net_arch": {"type": "categorical", "choices": [[]]}}, ["net_arch", "positive integers"]),
    ({"net_arch": {"type": "categorical", "choices": [[64, True]]}}, ["net_arch", "positive integers"]),
    ({"net_arch": {"type": "categorical", "choices": ["64,64"]}}, ["net_arch", "positive integers"]),
])
def test_a_bad_space_is_one_line_naming_the_key(doc: object, names: list[str]) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_space(doc, "ppo")
    _one_line_naming(exc, *names)


def test_an_error_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "space.yaml"
    path.write_text("gamma: {type: categorical, choices: [0.9, 2.0]}\n")
    with pytest.raises(ConfigError) as exc:
        load_space(str(path), "ppo")
    _one_line_naming(exc, str(path), "gamma", "2.0")
    with pytest.raises(ConfigError) as exc:
        load_space(str(path), "dqn")
    _one_line_naming(exc, str(path), "gamma")
    with pytest.raises(ConfigError) as exc:
        parse_space({"n_steps": {"type": "categorical", "choices": [8]}}, "dqn", source="my.yaml")
    _one_line_naming(exc, "my.yaml", "n_steps", "dqn", "buffer_size")


@pytest.mark.parametrize(("name", "text", "names"), [
    ("bad.yaml", "gamma: {type: categorical, choices: [0.9\n", ["bad.yaml", "YAML", "line"]),
    ("bad.yml", "gamma:\n  type: float\n low: 1\n", ["bad.yml", "YAML"]),
    ("bad.json", '{"gamma": {"type": "float",}}', ["bad.json", "JSON", "line 1"]),
    ("bad.space", "{gamma: [", ["bad.space", "YAML"]),
    ("empty.yaml", "", ["empty.yaml", "mapping"]),
    ("list.json", "[1, 2]", ["list.json", "mapping"]),
])
def test_a_malformed_file_is_one_line_naming_it(tmp_path: Path, name: str, text: str, names: list[str]) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_space(str(path), "ppo")
    _one_line_naming(exc, *names)


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        load_space(str(tmp_path / "nope.yaml"), "ppo")
    _one_line_naming(exc, "space file", "nope.yaml", "not found")
    with pytest.raises(ConfigError, match="not found"):
        load_space(str(tmp_path), "ppo")  # a directory is no space file


# ----------------------------------------------------------------------------- house rules
def test_the_module_imports_optuna_and_yaml_lazily() -> None:
    """The CLI parses a space before importing anything heavy: at module level only the
    stdlib and the three trainkit modules it builds on."""
    tree = ast.parse(MODULE.read_text())
    top: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            top.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            top.add(node.module if node.module.startswith("trainkit") else node.module.split(".")[0])
    allowed = {"trainkit.algorithms", "trainkit.config", "trainkit.errors"}
    assert {m for m in top if m not in sys.stdlib_module_names and m != "__future__"} <= allowed, top

"""Bad input, table-driven, through the real CLI: every row must end with exit 2 (the command
line or a value is invalid, docs/ARCHITECTURE.md, "Errors and exit codes") or 1 (a runtime failure: the data, the store), exactly
one ``error: …`` line on stderr saying what is wrong, no traceback, nothing on stdout, and no
run created, removed or ended in the store (compared run by run, deleted runs included).

The store the rows run against already holds a trainkit model and a foreign run, so a ``clear``
that accepted a bad filter, or a ``train`` that accepted a bad value, would show up.

CSV decisions follow the data layer (trainkit/data/csv.py): a missing file is refused while
the command line is parsed (2); an empty file, missing columns, NaN, a duplicate date or a
non-positive price are found when the file is read (1); unsorted dates are sorted, not refused
(test_unsorted_csv_is_accepted).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from .rel_support import (
    FAST_CLI,
    WINDOW_CLI,
    all_runs,
    assert_clean_failure,
    cli,
    client,
    copy_sqlite_store,
    error_lines,
    snapshot,
    train_inprocess,
)

HEX32 = "0123456789abcdef" * 2
SYN = ["--data-source", "synthetic", *FAST_CLI]
CSV_WINDOW = ["--train-start", "2010-01-04", "--train-end", "2012-12-31"]
#: words of a message that also says how to fix it (an instruction, an example or the accepted values)
HOW_TO_FIX = ("use ", "e.g.", "choose", "--help", "pass ", "re-run", "check", "give ", "must ", "expected", "need",
              "known:", "a run id is")


def _train(*extra: str, symbols: tuple[str, ...] = ("BADIN",)) -> list[str]:
    return ["train", "--symbols", *symbols, *WINDOW_CLI, *SYN, *extra]


def _csv_train(name: str) -> list[str]:
    return ["train", "--symbols", "GOOG", *CSV_WINDOW, *FAST_CLI, "--data-source", f"csv:{{csv}}/{name}"]


# id, argv ({csv} is the CSV directory), exit code, words the stderr line must contain
CASES: list[tuple[str, list[str], int, tuple[str, ...]]] = [
    # symbols
    ("symbol-single-quote", ["train", "--symbols", "A'B", *WINDOW_CLI, *SYN], 2, ("symbol", "A'B")),
    ("symbol-double-quote", ["train", "--symbols", 'A"B', *WINDOW_CLI, *SYN], 2, ("symbol",)),
    ("symbol-space", ["train", "--symbols", "AA PL", *WINDOW_CLI, *SYN], 2, ("symbol",)),
    ("symbol-slash", ["train", "--symbols", "A/B", *WINDOW_CLI, *SYN], 2, ("symbol",)),
    ("symbol-dotdot", ["train", "--symbols", "A..B", *WINDOW_CLI, *SYN], 2, ("symbol",)),
    ("symbol-traversal-list", ["list", "--symbol", "../../etc"], 2, ("symbol",)),
    ("symbol-injection-list", ["list", "--symbol", "A' OR 1=1"], 2, ("symbol",)),
    ("symbol-injection-clear", ["clear", "--symbol", "X' OR tags.config_hash LIKE '%", "--yes"], 2, ("symbol",)),
    ("hash-injection-clear", ["clear", "--config-hash", "' or ''='", "--yes"], 2, ("hash",)),
    # dates and windows
    ("date-impossible", _train("--train-start", "2021-02-30"), 2, ("date", "2021-02-30")),
    ("date-garbage", _train("--train-end", "yesterday"), 2, ("date",)),
    ("dates-reversed", ["train", "--symbols", "BADIN", "--train-start", "2022-12-31", "--train-end", "2020-01-01", *SYN],
     2, ("before",)),
    ("window-too-short", ["train", "--symbols", "BADIN", "--train-start", "2021-01-04", "--train-end", "2021-01-29", *SYN],
     2, ("days",)),
    ("backtest-dates-reversed", ["backtest", "--model-uri", f"runs:/{HEX32}/model", "--start", "2023-06-30",
                                 "--end", "2023-01-02"], 2, ("start",)),
    # numbers
    ("timesteps-zero", _train("--timesteps", "0"), 2, ("timesteps",)),
    ("timesteps-negative", _train("--timesteps", "-5"), 2, ("timesteps",)),
    ("features-zero", _train("--feature-count", "0"), 2, ("feature",)),
    ("features-too-many", _train("--feature-count", "33"), 2, ("feature",)),
    # names
    ("algo-unknown", _train("--algo", "xgboost"), 2, ("algo",)),
    ("source-unknown", _train("--data-source", "bloomberg"), 2, ("source",)),
    ("hp-unknown", _train("--hp", "warp_factor=9"), 2, ("warp_factor",)),
    ("hp-malformed", _train("--hp", "learning_rate=fast"), 2, ("learning_rate",)),
    ("older-than-bad", ["clear", "--older-than", "a while", "--yes"], 2, ("older-than",)),
    # model URIs
    ("uri-not-a-uri", ["backtest", "--model-uri", "my-model", "--start", "2023-01-02", "--end", "2023-06-30"], 2, ("uri",)),
    ("uri-bad-run-id", ["register", "--model-uri", "runs:/../../etc/model"], 2, ("run id",)),
    ("uri-unknown-run", ["backtest", "--model-uri", f"runs:/{HEX32}/model", "--start", "2023-01-02", "--end", "2023-06-30"],
     1, (HEX32,)),
    ("uri-unknown-registered", ["register", "--model-uri", "models:/no-such-model/3"], 1, ("no-such-model",)),
    # CSV files
    ("csv-missing", _csv_train("absent.csv"), 2, ("not found", "absent.csv")),
    ("csv-empty", _csv_train("empty.csv"), 1, ("empty.csv", "empty")),
    ("csv-no-volume", _csv_train("no_volume.csv"), 1, ("no_volume.csv", "Volume")),
    ("csv-nan", _csv_train("nan.csv"), 1, ("nan.csv", "missing")),
    ("csv-duplicate-date", _csv_train("duplicate.csv"), 1, ("duplicate.csv", "duplicate")),
    ("csv-zero-price", _csv_train("zero_price.csv"), 1, ("zero_price.csv", "non-positive")),
]


@pytest.fixture(scope="module")
def populated(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> dict:
    """A sqlite store (a copy of the session's migrated template) holding one trainkit model and
    one foreign run, plus the CSV files."""
    from backtesting.test import GOOG

    root = tmp_path_factory.mktemp("bad-input")
    uri = copy_sqlite_store(sqlite_template, root)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("TRAINKIT_CACHE_DIR", str(root / "cache"))
        mp.setenv("TRAINKIT_CLAIM_SETTLE", "0.3")
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        res = train_inprocess(uri, "BASE")
    c = client(uri)
    exp_id = c.get_experiment_by_name("trainkit").experiment_id
    foreign = c.create_run(exp_id, run_name="someone-elses", tags={"config_hash": "x"})
    c.set_terminated(foreign.info.run_id, "FINISHED")

    csv = root / "csv"
    csv.mkdir()
    good = GOOG.copy()
    good.index.name = "Date"
    (csv / "empty.csv").write_text("")
    good.drop(columns=["Volume"]).to_csv(csv / "no_volume.csv")
    nan = good.copy()
    nan.loc["2011-06-01":"2011-06-01", "Close"] = float("nan")
    nan.to_csv(csv / "nan.csv")
    pd.concat([good, good.loc["2011-06-01":"2011-06-01"]]).sort_index().to_csv(csv / "duplicate.csv")
    zero = good.copy()
    zero.loc["2011-06-01":"2011-06-01", ["Low", "Close"]] = 0.0
    zero.to_csv(csv / "zero_price.csv")
    good.sample(frac=1.0, random_state=7).to_csv(csv / "unsorted.csv")
    good.to_csv(csv / "sorted.csv")
    return {"uri": uri, "root": root, "csv": csv, "model": res, "foreign": foreign.info.run_id}


@pytest.mark.parametrize("argv, rc, needles", [pytest.param(a, r, n, id=i) for i, a, r, n in CASES])
def test_bad_input_is_refused_cleanly(populated: dict, argv: list[str], rc: int, needles: tuple[str, ...]) -> None:
    uri, root = populated["uri"], populated["root"]
    argv = [a.replace("{csv}", str(populated["csv"])) for a in argv]
    before = snapshot(uri)
    res = cli(*argv, env={"MLFLOW_TRACKING_URI": uri}, cwd=root, timeout=120)
    after = snapshot(uri)
    assert_clean_failure(res, rc, *needles)
    line = error_lines(res)[0]
    assert any(w in line.lower() for w in HOW_TO_FIX) or rc == 1, f"the message does not say how to fix it\n{res}"
    created = {k: v for k, v in after.items() if k not in before}
    removed = {k: v for k, v in before.items() if after.get(k) != v}
    assert not created and not removed, f"runs created {created} / changed or removed {removed}\n{res}"


@pytest.mark.slow
def test_unsorted_csv_is_accepted(populated: dict) -> None:
    """The data layer sorts unsorted dates: the CLI trains on the file, on the same prices as
    the sorted file (same ``trainkit.data_digest``)."""
    from trainkit.data import DataFetcherFactory
    from trainkit.features import warmup_start
    from trainkit.config import parse_date

    uri, csv = populated["uri"], populated["csv"]
    res = cli("train", "--symbols", "GOOG", *CSV_WINDOW, *FAST_CLI, "--data-source", f"csv:{csv / 'unsorted.csv'}",
              "--json", env={"MLFLOW_TRACKING_URI": uri}, cwd=populated["root"])
    assert res.rc == 0 and "Traceback" not in res.err, str(res)
    [row] = json.loads(res.out)
    assert row["status"] == "trained", row
    digest = client(uri).get_run(row["run_id"]).data.tags["trainkit.data_digest"]
    sorted_fetch = DataFetcherFactory.fetch(f"csv:{csv / 'sorted.csv'}", "GOOG",
                                            warmup_start(parse_date("2010-01-04", "start")), parse_date("2012-12-31", "end"))
    assert digest == sorted_fetch.digest
    assert len([r for r in all_runs(uri, "trainkit") if r.data.tags.get("trainkit.symbol") == "GOOG"]) == 1

"""Issue 24: a served model never answers 5xx to bad bars.

A bounded, seeded fuzz against a real ``mlflow models serve`` (in an environment where trainkit
cannot be imported, so the model's own copy of the code answers): a few hundred payloads made
from one valid request (the bars of ``tests/test_signals.py``, ``params: {"start": ...}``), sent
as the JSON formats the README documents (``dataframe_split``, ``dataframe_records`` and
``inputs`` as columns). Every invalid one must get a 4xx whose message names the problem (the
column, "NaN", "non-positive", "not sorted", "duplicate" …), never a 5xx, never a traceback and
never a 200; afterwards the server still gives the valid request the answer it gave before.

What is valid, decided here (and in the README's "Serving signals"):

* **Extra columns are ignored**, whatever they hold (text, NaN, inf, bools): 200 and the same
  answer, as a CSV data source ignores them. So is one ``Symbol``, and an ``Adj Close`` equal to
  the close.
* **Column names in any case or punctuation** and **numbers sent as strings** (``"101.25"``) are
  read as a CSV reader reads them: 200 and the same answer. So are the three JSON formats.
* **A long history** (60 years of daily bars) is answered (200) in bounded time.
* **A param MLflow does not know** (a typo: ``"strat"``) is dropped by MLflow before the model
  sees it (the server logs a warning): 200 and the walk of the request without it.

Everything else is refused: NaN or null, ±inf, zero and negative prices, negative volume, values
outside ``signals_core.BAR_LIMIT`` (huge numbers, tiny prices), text, bools and lists where a
number belongs, missing, doubled or unreadable dates and columns, empty frames, unsorted and
duplicate dates, too little history, High below Low, two symbols, params the model cannot use.

Two limits are MLflow's, before the model runs, and not fuzzed: in the ``inputs`` format MLflow
makes a numpy array of each column, so a bool among numbers arrives as 1.0 (a whole column of
bools is still refused) and a list inside a column is MLflow's own 400; and a deeply nested JSON
body (``[[[[…`` about a thousand levels deep: no payload made from bars) makes ``json.loads``
raise ``RecursionError`` in MLflow's scoring server, which answers 500 before any model code runs.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np
import pytest
from support import served_model
from test_signals import E, S, _bars, _no_trainkit_env, store  # noqa: F401  (store: the module's trained models)

pytestmark = [pytest.mark.slow]  # starts `mlflow models serve` (tests/conftest.py: what slow means)

SEED = 24  # the number: the same payloads on every run
OHLCV = ("Open", "High", "Low", "Close", "Volume")
PRICES = OHLCV[:4]
FORMATS = ("split", "records", "inputs")
#: extra columns a client may send: none of them names a date, a symbol or a price
EXTRA_NAMES = ("note", "Dividends", "Stock Splits", "vwap", "trades", "comment")
LIMIT = 1e15  # trainkit.signals_core.BAR_LIMIT (the served model's own copy decides)
FUZZ_SECONDS = 60  # the whole fuzz, once the server is up
LONG_SECONDS = 30  # one request with 60 years of bars


class Case(NamedTuple):
    kind: str  # the payload class (a row of the report)
    body: bytes
    expect: tuple[str, ...] | str  # words the 4xx message must hold, or "same" / "default" (a 200)


# ----------------------------------------------------------------------------- the server
@pytest.fixture(scope="module")
def server(store, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:  # noqa: F811
    root = tmp_path_factory.mktemp("serve-fuzz")
    with served_model(store["new"].model_uri, _no_trainkit_env(store, root), root) as base:
        yield base
    blocked = (root / "block.log").read_text()
    assert "uvicorn" in blocked and "blocked" not in blocked, blocked  # the model's own code answered


def _send(base: str, body: bytes) -> tuple[int, str, float]:
    req = urllib.request.Request(base + "/invocations", data=body, headers={"Content-Type": "application/json"})
    t0 = time.monotonic()
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            code, text = r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        code, text = exc.code, exc.read().decode(errors="replace")
    return code, text, time.monotonic() - t0


# ----------------------------------------------------------------------------- payloads
def _valid() -> tuple[list[str], list[list[Any]]]:
    """The valid request's bars as JSON-ready columns and rows (dates as ``YYYY-MM-DD``)."""
    frame = _bars().reset_index()
    frame["Date"] = frame["Date"].dt.strftime("%Y-%m-%d")
    return [str(c) for c in frame.columns], frame.astype(object).to_numpy().tolist()


def _doc(fmt: str, cols: list[str], rows: list[list[Any]], params: Any = None) -> bytes:
    if fmt == "split":
        doc: dict[str, Any] = {"dataframe_split": {"columns": cols, "data": rows}}
    elif fmt == "records":
        doc = {"dataframe_records": [dict(zip(cols, r)) for r in rows]}
    else:
        doc = {"inputs": {c: [r[i] for r in rows] for i, c in enumerate(cols)}}
    if params is not None:
        doc["params"] = params
    return json.dumps(doc).encode()  # NaN and ±Infinity are JSON to Python's json, and to MLflow's server


class _Fuzz:
    """The payloads, each made from the valid request by one mutation chosen by a seeded rng."""

    def __init__(self, cols: list[str], rows: list[list[Any]], seed: int = SEED) -> None:
        self.cols, self.rows = cols, rows
        self.rng = np.random.default_rng(seed)
        self.cases: list[Case] = []
        self.n = 0

    # helpers
    def fmt(self, allowed: tuple[str, ...] = FORMATS) -> str:
        self.n += 1
        return allowed[self.n % len(allowed)]

    def row(self) -> int:
        return int(self.rng.integers(len(self.rows)))

    def pick(self, seq: Any) -> Any:
        return seq[int(self.rng.integers(len(seq)))]

    def put(self, col: str, value: Any, row: int | None = None) -> tuple[list[list[Any]], int]:
        i = self.row() if row is None else row
        rows = [list(r) for r in self.rows]
        rows[i][self.cols.index(col)] = value
        return rows, i

    def add(self, kind: str, expect: tuple[str, ...] | str, *, rows: list[list[Any]] | None = None,
            cols: list[str] | None = None, fmt: str | None = None, params: Any = ...) -> None:
        params = {"start": S} if params is ... else params
        body = _doc(fmt or self.fmt(), cols or self.cols, self.rows if rows is None else rows, params)
        self.cases.append(Case(kind, body, expect))

    def cell(self, kind: str, columns: tuple[str, ...], make: Any, expect: Any, n: int,
             formats: tuple[str, ...] = FORMATS) -> None:
        """``n`` payloads with one cell of one of ``columns`` replaced by ``make(rng)``."""
        for _ in range(n):
            col = self.pick(columns)
            value = make(self.rng)
            rows, i = self.put(col, value)
            self.add(kind, expect(col, value, self.rows[i][0]), rows=rows, fmt=self.fmt(formats))


def _value_cases(fz: _Fuzz) -> None:
    """One bad number (or no number) in one cell."""
    fz.cell("NaN or null", OHLCV, lambda r: None if r.random() < 0.4 else float("nan"),
            lambda c, v, d: ("missing values", c, d, "NaN"), 24)
    fz.cell("+-inf", OHLCV, lambda r: float("inf") if r.random() < 0.5 else -float("inf"),
            lambda c, v, d: ("infinite values", c, d), 18)
    fz.cell("zero price", PRICES, lambda r: 0 if r.random() < 0.5 else 0.0,
            lambda c, v, d: ("non-positive prices", c, d), 12)
    fz.cell("negative price", PRICES, lambda r: -float(10 ** r.uniform(-6, 6)),
            lambda c, v, d: ("non-positive prices", c, d), 12)
    fz.cell("negative volume", ("Volume",), lambda r: -float(10 ** r.uniform(0, 9)),
            lambda c, v, d: ("negative volume", "Volume", d), 8)
    fz.cell("huge number", OHLCV, lambda r: float(10 ** r.uniform(15.1, 308)),
            lambda c, v, d: ("implausible values", c, d), 16)
    fz.cell("huge integer", OHLCV, lambda r: 10 ** int(r.integers(16, 400)),
            lambda c, v, d: ("infinite values" if v > 1.7e308 else "implausible values", c, d), 12)
    fz.cell("tiny price", PRICES, lambda r: float(10 ** -r.uniform(15.1, 300)),
            lambda c, v, d: ("implausible values", c, d), 10)
    words = ("abc", "", "N/A", "1,234.5", "$101", "nan", "null", "x" * 5000, "1.0.0", "--")
    fz.cell("text", OHLCV, lambda r: words[int(r.integers(len(words)))],
            lambda c, v, d: ("non-numeric value", c, d), 20)
    fz.cell("bool", OHLCV, lambda r: bool(r.random() < 0.5),
            lambda c, v, d: ("non-numeric value", c, d), 10, ("split", "records"))
    fz.cell("list or object", OHLCV, lambda r: [1.0, 2.0] if r.random() < 0.5 else {"price": 1.0},
            lambda c, v, d: ("non-numeric value", c, d), 8, ("split", "records"))
    for _ in range(6):  # a whole column of the wrong type (a column of bools in every format)
        col = fz.pick(OHLCV)
        j = fz.cols.index(col)
        fill = fz.pick([lambda r, j=j: r[j] > 0, lambda r, j=j: f"price {r[j]}", lambda r: None])
        rows = [[fill(r) if k == j else v for k, v in enumerate(r)] for r in fz.rows]
        words = "missing values" if fill(fz.rows[0]) is None else "non-numeric value"
        fz.add("wrong column type", (words, col), rows=rows)


def _date_cases(fz: _Fuzz) -> None:
    fz.cell("date: a number", ("Date",), lambda r: float(r.integers(1, 2**40)) if r.random() < 0.5
            else int(r.integers(19000000, 21000000)), lambda c, v, d: ("Date", "must be dates"), 6,
            ("split", "records"))  # in `inputs` MLflow makes the column strings: '20220103' is a date
    fz.cell("date: null", ("Date",), lambda r: None, lambda c, v, d: ("empty date", "Date"), 5)
    garbage = ("soon", "2022-02-30", "2022-13-01", "31/31/2022", "yesterday", "", "2022-01-0x")
    fz.cell("date: unparseable", ("Date",), lambda r: garbage[int(r.integers(len(garbage)))],
            lambda c, v, d: ("Date",) + (("empty date",) if v == "" else ("unparseable date",)), 10)
    fz.cell("date: a bool or a list", ("Date",), lambda r: True if r.random() < 0.5 else [2022, 1, 3],
            lambda c, v, d: ("unparseable date", "Date"), 4, ("split", "records"))
    for _ in range(12):  # two rows swapped, the frame reversed, rotated or shuffled
        rows = list(fz.rows)
        how = fz.pick(("swap", "reverse", "rotate", "shuffle"))
        if how == "swap":
            i = fz.row() % (len(rows) - 1)
            rows[i], rows[i + 1] = rows[i + 1], rows[i]
        elif how == "reverse":
            rows.reverse()
        elif how == "rotate":
            k = 1 + fz.row() % (len(rows) - 1)
            rows = rows[k:] + rows[:k]
        else:
            rows = [rows[i] for i in fz.rng.permutation(len(rows))]
        fz.add("unsorted dates", ("not sorted", "oldest first"), rows=rows)
    for _ in range(12):  # a bar sent twice, or a date repeated with other prices
        i = fz.row() % (len(fz.rows) - 1)
        rows = [list(r) for r in fz.rows]
        if fz.rng.random() < 0.5:
            rows.insert(i + 1, list(rows[i]))
        else:
            rows[i + 1][0] = rows[i][0]
        fz.add("duplicate dates", ("duplicate dates", rows[i][0]), rows=rows)


def _shape_cases(fz: _Fuzz) -> None:
    """Columns missing, doubled or extra; empty frames; too little history; the bar rules."""
    for _ in range(14):
        gone = [str(c) for c in fz.rng.choice(fz.cols, size=int(fz.rng.integers(1, 3)), replace=False)]
        keep = [j for j, c in enumerate(fz.cols) if c not in gone]
        rows = [[r[j] for j in keep] for r in fz.rows]
        expect = ("no dates", "Date") if "Date" in gone else ("lack column(s)", *gone)
        fz.add("missing column", expect, rows=rows, cols=[fz.cols[j] for j in keep])
    for _ in range(8):  # the same column twice: under its own name, or in another case
        col = fz.pick(OHLCV)
        j = fz.cols.index(col)
        fmt = fz.fmt()
        twin = col if fmt == "split" else col.upper()
        fz.add("doubled column", ("appear more than once", col), rows=[r + [r[j]] for r in fz.rows],
               cols=fz.cols + [twin], fmt=fmt)
    empties = [("split", [], ("no rows",)), ("inputs", [], ("no rows",)),
               ("records", [], ("expected daily bars", "(0, 0)"))]
    for fmt, rows, expect in empties * 2:
        fz.add("empty frame", expect, rows=rows, fmt=fmt)
    fz.cases.append(Case("empty frame", b'{"dataframe_split": {"data": []}}', ("expected daily bars", "(0, 0)")))
    fz.cases.append(Case("empty frame", b'{"dataframe_records": [{}]}', ("expected daily bars", "(1, 0)")))
    for _ in range(10):
        k = int(fz.rng.integers(1, 200))
        fz.add("too little history", ("too little history",), rows=fz.rows[-k:], params=None)
    for _ in range(4):
        k = int(fz.rng.integers(1, 199))
        first = next(i for i, r in enumerate(fz.rows) if r[0] >= S)
        fz.add("too little history", ("too little history before start", S), rows=fz.rows[first - k:])
    for _ in range(8):
        i = fz.row()
        rows = [list(r) for r in fz.rows]
        rows[i][2] = rows[i][3] * float(fz.rng.uniform(0.1, 0.99))  # High under the Low
        fz.add("High below Low", ("High below Low", rows[i][0]), rows=rows)
    for _ in range(4):
        names = ["AAPL", "MSFT"] * (len(fz.rows) // 2) + ["AAPL"] * (len(fz.rows) % 2)
        fz.add("two symbols", ("2 symbols", "Symbol"), rows=[r + [s] for r, s in zip(fz.rows, names)],
               cols=fz.cols + ["Symbol"])
    close = fz.cols.index("Close")
    for bad, words in ((None, "missing values"), ("n/a", "non-numeric value"), (float("inf"), "infinite values"),
                       (-1.0, "non-positive prices"), (True, "non-numeric value")):
        rows, i = fz.put("Close", bad)
        fz.add("bad Adj Close", (words,), rows=[r + [v[close]] for r, v in zip(fz.rows, rows)],
               cols=fz.cols + ["Adj Close"], fmt=fz.fmt(("split", "records")))


def _accepted_cases(fz: _Fuzz) -> None:
    """Payloads that differ from the valid one only in what the model ignores or reads alike."""
    junk = (lambda r: "x", lambda r: float("nan"), lambda r: float("inf"), lambda r: None, lambda r: True,
            lambda r: -1e300, lambda r: "2022-01-03")
    for _ in range(12):
        names = list(fz.rng.choice(EXTRA_NAMES, size=int(fz.rng.integers(1, 4)), replace=False))
        fills = [fz.pick(junk) for _ in names]
        fz.add("extra columns (ignored)", "same", rows=[r + [f(fz.rng) for f in fills] for r in fz.rows],
               cols=fz.cols + [str(n) for n in names])
    for _ in range(6):
        how = fz.pick((str.lower, str.upper, lambda c: f" {c} ", lambda c: c.replace("e", "E")))
        fz.add("renamed columns (same)", "same", cols=[how(c) for c in fz.cols])
    for _ in range(6):
        j = fz.cols.index(fz.pick(OHLCV))
        fz.add("numbers as strings (same)", "same", rows=[[repr(v) if k == j else v for k, v in enumerate(r)]
                                                          for r in fz.rows])
    for fmt in FORMATS:
        fz.add("valid, another format (same)", "same", fmt=fmt)
    close = fz.cols.index("Close")
    fz.add("one symbol, Adj Close = Close (same)", "same", rows=[r + ["AAPL", r[close]] for r in fz.rows],
           cols=fz.cols + ["Symbol", "Adj Close"])
    fz.add("unknown param (dropped by MLflow)", "default", params={"strat": S})


def _param_cases(fz: _Fuzz) -> None:
    for value in (2, -2, 0.5, float("nan"), float("inf"), "long", True, [1], {"p": 1}, 1e300):
        fz.add("bad position", ("position",), params={"start": S, "position": value})
    for value in ("soon", "2022-02-30", "", 20220103, "2030-01-02", "1900-01-02", ["2022-01-03"], "x" * 3000):
        expect = ("too little history",) if value == "1900-01-02" else ("start",)
        if value == "":  # an empty start is no start: the default walk
            expect = "default"
        fz.add("bad start", expect, params={"start": value})
    for value in ([S], "start", 5):
        fz.add("params not a mapping", ("Parameters must be a dictionary",), params=value)


def _envelope_cases(fz: _Fuzz, valid: bytes) -> None:
    """The request around the bars: MLflow's own checks, before the model runs."""
    for _ in range(8):  # the valid body cut short
        fz.cases.append(Case("truncated JSON", valid[: int(fz.rng.integers(1, len(valid) - 1))], ("JSON",)))
    doc = json.loads(valid)
    split = doc["dataframe_split"]
    for body, expect in (
        ({"bars": split}, ("input fields",)),
        ({"dataframe_split": split, "inputs": {"Date": []}}, ("input fields",)),
        ({"dataframe_split": {"columns": split["columns"]}}, ("split", "data")),
        ({"dataframe_split": {**split, "extra": 1}}, ("split", "data")),
        ({"dataframe_split": split["data"]}, ("split", "dictionary")),
        ({"dataframe_records": split}, ("records", "list")),
        ([split], ("JSON dictionary",)),
        ({"dataframe_split": {"columns": split["columns"][:3], "data": split["data"]}}, ("dataframe_split",)),
        ({"inputs": {"Date": split["data"][0][:1], "Close": [1.0, 2.0]}}, ("one length",)),
        ({"inputs": [[float("nan")] * 22]}, ("observations", "NaN")),
        ({"inputs": [[1.0] * 5]}, ("observations of shape",)),
        ({"inputs": [[True] * 22]}, ("observations must be numbers",)),
        ({"inputs": [["a"] * 22]}, ("observations must be numbers",)),
    ):
        fz.cases.append(Case("malformed request", json.dumps(body).encode(), expect))


def _cases(cols: list[str], rows: list[list[Any]]) -> list[Case]:
    fz = _Fuzz(cols, rows)
    _value_cases(fz)
    _date_cases(fz)
    _shape_cases(fz)
    _accepted_cases(fz)
    _param_cases(fz)
    _envelope_cases(fz, _doc("split", cols, rows, {"start": S}))
    return fz.cases


# ----------------------------------------------------------------------------- the tests
def _problem(code: int, text: str, case: Case, answers: dict[str, Any]) -> str | None:
    """What is wrong with the server's answer to ``case`` (None: nothing)."""
    if code >= 500:
        return f"{code} (a server error): {text[:300]}"
    if isinstance(case.expect, str):
        if code != 200:
            return f"{code}, expected 200: {text[:300]}"
        got = json.loads(text)["predictions"]
        return None if got == answers[case.expect] else f"200 with another answer than the {case.expect} request's"
    if not 400 <= code < 500:
        return f"{code}, expected a 4xx: {text[:300]}"
    try:
        body = json.loads(text)
    except ValueError:
        return f"{code} without a JSON error: {text[:300]}"
    # MLflow puts the frame's repr in front ("Failed to predict data '…'. Error: …"): judge the rest
    message = body.get("message", "").rsplit("\nError: ", 1)[-1]
    if body.get("error_code") not in ("INVALID_PARAMETER_VALUE", "BAD_REQUEST") or body.get("stack_trace") \
            or "Traceback" in text or "unexpected error" in message:
        return f"{code} {body.get('error_code')}, a stack trace or a generic message: {text[:300]}"
    missing = [w for w in case.expect if w not in message]
    return f"{code}: the message lacks {missing}: {message[:300]}" if missing else None


def test_fuzzed_bars_get_a_4xx_naming_the_problem_and_the_server_keeps_answering(server: str):
    cols, rows = _valid()
    valid = _doc("split", cols, rows, {"start": S})
    code, text, _ = _send(server, valid)
    assert code == 200, text[:2000]
    answers = {"same": json.loads(text)["predictions"]}
    assert answers["same"][0]["date"] == S and answers["same"][-1]["date"] == E
    code, text, _ = _send(server, _doc("split", cols, rows, None))
    assert code == 200, text[:2000]
    answers["default"] = json.loads(text)["predictions"]

    cases = _cases(cols, rows)
    assert 250 <= len(cases) <= 500, len(cases)
    assert _cases(cols, rows) == cases  # seeded: the same payloads on every run
    failures: list[str] = []
    seen: dict[str, Counter] = defaultdict(Counter)
    samples: dict[str, str] = {}
    t0 = time.monotonic()
    for n, case in enumerate(cases):
        code, text, _ = _send(server, case.body)
        seen[case.kind][code] += 1
        samples.setdefault(case.kind, text[-160:])
        problem = _problem(code, text, case, answers)
        if problem:
            failures.append(f"#{n} {case.kind} ({case.expect}): {problem}")
    fuzz_seconds = time.monotonic() - t0
    report = "\n".join(f"{kind:38s} {dict(codes)}  {samples[kind]!r}" for kind, codes in seen.items())
    print(f"\n{len(cases)} payloads in {fuzz_seconds:.1f}s\n{report}")
    assert not failures, f"{len(failures)} of {len(cases)} answers are wrong:\n" + "\n".join(failures[:30])
    assert fuzz_seconds < FUZZ_SECONDS, f"the fuzz took {fuzz_seconds:.0f}s"

    code, text, _ = _send(server, valid)  # the server still answers, and the same
    assert code == 200 and json.loads(text)["predictions"] == answers["same"], text[:2000]


def test_a_long_history_is_answered_in_bounded_time(server: str):
    frame = _bars(start="1962-01-02").reset_index()  # 60 years of daily bars, ~13,700 rows
    frame["Date"] = frame["Date"].dt.strftime("%Y-%m-%d")
    cols, rows = [str(c) for c in frame.columns], frame.astype(object).to_numpy().tolist()
    assert len(rows) > 13_000
    for params, days in (({"start": S}, sum(r[0] >= S for r in rows)), (None, len(rows) - 199)):
        code, text, seconds = _send(server, _doc("split", cols, rows, params))
        assert code == 200, text[:2000]
        got = json.loads(text)["predictions"]
        assert len(got) == days and got[-1]["date"] == E, (len(got), days)
        assert {p["position"] for p in got} <= {-1, 0, 1}
        assert seconds < LONG_SECONDS, f"{len(rows)} bars took {seconds:.1f}s"

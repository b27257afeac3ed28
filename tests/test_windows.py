"""The window grammar and the fold arithmetic of a walk-forward (:mod:`trainkit.walkforward.windows`)
alone: pure functions on a business-day calendar — no prices, no store, no training. Fast.

The invariant every fold keeps (:func:`check_folds`) is shared with tests/test_walkforward.py,
which checks it on real calendars (GOOG's, whose data start later than the requested start).
"""

from __future__ import annotations

import datetime as _dt
import itertools
import subprocess

import pytest
from support import HEAVY_MODULES, PYTHON

from trainkit.errors import ConfigError
from trainkit.walkforward.windows import (
    MIN_TEST_DAYS,
    Calendar,
    Window,
    add_months,
    fold_windows,
    latest_train_window,
    parse_window,
)

W = parse_window
BDAYS = Calendar.business_days("2000-01-03", "2030-12-31")


def d(text: str) -> _dt.date:
    return _dt.date.fromisoformat(text)


def check_folds(cal: Calendar, folds, embargo_days: int = 0, embargo_tdays: int = 0) -> None:
    """The invariants every fold must keep: no test day on or before the fold's last training
    day, the embargo between them, and trading days counted right."""
    for f in folds:
        assert d(f.train_start) <= d(f.train_first_day) <= d(f.train_last_day) <= d(f.train_end)
        assert d(f.test_start) <= d(f.test_first_day) <= d(f.test_last_day) <= d(f.test_end)
        assert d(f.test_first_day) > d(f.train_last_day), f  # the rule a walk-forward must never break
        assert d(f.test_start) > d(f.train_end), f
        assert (d(f.test_start) - d(f.train_end)).days >= 1 + embargo_days
        assert cal.count(d(f.train_last_day) + _dt.timedelta(days=1), d(f.test_first_day)) >= embargo_tdays
        assert f.train_days == cal.count(d(f.train_start), d(f.train_end) + _dt.timedelta(days=1))
        assert f.test_days == cal.count(d(f.test_start), d(f.test_end) + _dt.timedelta(days=1)) >= MIN_TEST_DAYS


# ============================================================================ windows
@pytest.mark.parametrize("text, window", [
    ("30d", Window(days=30)), ("2w", Window(days=14)), ("6m", Window(months=6)), ("3y", Window(months=36)),
    ("126", Window(trading_days=126)), ("126td", Window(trading_days=126)), (126, Window(trading_days=126)),
    (" 3Y ", Window(months=36)),
])
def test_windows_are_durations_or_trading_day_counts(text, window) -> None:
    assert parse_window(text) == window
    assert parse_window(str(window)) == window  # the canonical text parses back


@pytest.mark.parametrize("text", ["6x", "", "-1", "1.5y", "three years", "0", "0d", None, True])
def test_bad_windows_say_what_works(text) -> None:
    with pytest.raises(ConfigError, match="window") as exc:
        parse_window(text, "test window")
    assert exc.value.exit_code == 2


def test_the_embargo_may_be_zero() -> None:
    assert parse_window("0d", "embargo", allow_zero=True).is_zero
    assert str(W("3y") + W("5d") + W("2") * 3) == "3y+5d+6td"


# ============================================================================ fold arithmetic
def test_sliding_folds_are_anchored_at_start_and_tile_the_range() -> None:
    folds, tail = fold_windows(BDAYS, "2012-01-01", "2016-12-31", W("3y"), W("6m"))
    assert tail is None
    assert [(f.train_start, f.train_end, f.test_start, f.test_end) for f in folds] == [
        ("2012-01-01", "2014-12-31", "2015-01-01", "2015-06-30"),
        ("2012-07-01", "2015-06-30", "2015-07-01", "2015-12-31"),
        ("2013-01-01", "2015-12-31", "2016-01-01", "2016-06-30"),
        ("2013-07-01", "2016-06-30", "2016-07-01", "2016-12-31"),
    ]
    for a, b in itertools.pairwise(folds):  # no gap, no overlap
        assert d(a.test_end) + _dt.timedelta(days=1) == d(b.test_start)
    check_folds(BDAYS, folds)


def test_expanding_folds_train_from_the_anchor_and_month_ends_do_not_drift() -> None:
    folds, tail = fold_windows(BDAYS, "2012-01-31", "2013-04-15", W("6m"), W("2m"), mode="expanding")
    assert {f.train_start for f in folds} == {"2012-01-31"}
    # anchored arithmetic: Jan 31 + 6m = Jul 31, + 8m = Sep 30, + 10m = Nov 30, + 12m = Jan 31 (never the 30th)
    assert [(f.train_end, f.test_start, f.test_end) for f in folds] == [
        ("2012-07-30", "2012-07-31", "2012-09-29"),
        ("2012-09-29", "2012-09-30", "2012-11-29"),
        ("2012-11-29", "2012-11-30", "2013-01-30"),
        ("2013-01-30", "2013-01-31", "2013-03-30"),
    ]
    assert [f.train_days for f in folds] == sorted(f.train_days for f in folds)
    assert tail is not None and "the last 11 trading day(s) (2013-03-31..2013-04-15) are not tested" in tail
    check_folds(BDAYS, folds)
    # and across February of a leap year
    feb, _ = fold_windows(BDAYS, "2011-08-31", "2012-08-31", W("6m"), W("2m"))
    assert [(f.test_start, f.test_end) for f in feb] == [
        ("2012-02-29", "2012-04-29"), ("2012-04-30", "2012-06-29"), ("2012-06-30", "2012-08-30")]


def test_the_embargo_separates_training_and_test_days() -> None:
    folds, _ = fold_windows(BDAYS, "2012-01-31", "2014-06-30", W("1y"), W("2m"), embargo=W("5d"), mode="expanding")
    assert (folds[0].train_end, folds[0].test_start, folds[0].test_end) == ("2013-01-30", "2013-02-05", "2013-04-04")
    for a, b in itertools.pairwise(folds):
        assert d(a.test_end) + _dt.timedelta(days=1) == d(b.test_start)
    check_folds(BDAYS, folds, embargo_days=5)

    folds, tail = fold_windows(BDAYS, "2012-01-02", "2014-12-31", W("504"), W("126"), embargo=W("5"))
    assert [f.train_days for f in folds] == [504, 504]  # sliding: exactly the trading days asked for
    assert [f.test_days for f in folds] == [126, 126]
    assert (folds[0].train_last_day, folds[0].test_first_day) == ("2013-12-05", "2013-12-13")  # 5 trading days apart
    check_folds(BDAYS, folds, embargo_tdays=5)
    assert tail is not None and "are not tested" in tail


@pytest.mark.parametrize("mode", ["sliding", "expanding"])
@pytest.mark.parametrize("train, test, step, embargo", [
    ("3y", "6m", None, "0d"), ("2y", "3m", "1m", "10d"), ("400", "60", "45", "3"), ("18m", "2m", "4m", "1w"),
    ("1y", "45d", None, "2"),
])
def test_no_test_day_is_on_or_before_its_folds_last_training_day(mode, train, test, step, embargo) -> None:
    folds, _ = fold_windows(BDAYS, "2010-01-29", "2016-03-31", W(train), W(test), W(step) if step else None,
                            W(embargo, allow_zero=True), mode)
    assert len(folds) >= 3
    check_folds(BDAYS, folds, embargo_days=W(embargo, allow_zero=True).days,
                embargo_tdays=W(embargo, allow_zero=True).trading_days)
    if mode == "expanding":
        assert {f.train_start for f in folds} == {"2010-01-29"}
        assert [f.train_days for f in folds] == sorted(f.train_days for f in folds)



# ============================================================================ calendar arithmetic
def test_the_latest_train_window_is_the_fold_a_later_end_adds_next() -> None:
    """What ``promote`` trains the chosen config on: the grid's last train window ending by the
    end — with the step equal to the test window, the next fold of a longer walk-forward."""
    assert latest_train_window(BDAYS, "2012-01-01", "2016-12-31", W("3y"), W("6m")) == ("2014-01-01", "2016-12-31")
    later, _ = fold_windows(BDAYS, "2012-01-01", "2017-06-30", W("3y"), W("6m"))
    assert (later[-1].train_start, later[-1].train_end) == ("2014-01-01", "2016-12-31")
    # an end inside a step: the last window that fits, never one past the end
    assert latest_train_window(BDAYS, "2012-01-01", "2016-11-15", W("3y"), W("6m")) == ("2013-07-01", "2016-06-30")
    assert latest_train_window(BDAYS, "2012-01-01", "2016-12-31", W("3y"), W("6m"), "expanding") == (
        "2012-01-01", "2016-12-31")
    with pytest.raises(ConfigError, match="no training window"):
        latest_train_window(BDAYS, "2012-01-01", "2013-12-31", W("3y"), W("6m"))


def test_month_arithmetic_clips_to_month_ends() -> None:
    assert add_months(d("2012-01-31"), 1) == d("2012-02-29")  # a leap year
    assert add_months(d("2013-01-31"), 1) == d("2013-02-28")
    assert add_months(d("2012-01-31"), 2) == d("2012-03-31")  # from the anchor, not from Feb 29
    assert add_months(d("2012-11-30"), 14) == d("2014-01-30")
    assert add_months(d("2012-03-31"), -1) == d("2012-02-29")


def test_the_calendar_counts_trading_days_and_continues_on_weekdays() -> None:
    cal = Calendar([d("2020-01-02"), d("2020-01-03"), d("2020-01-06"), d("2020-01-07")])  # a Thu..Tue
    assert (cal.first, cal.last) == (d("2020-01-02"), d("2020-01-07"))
    assert cal.count(d("2020-01-01"), d("2020-01-07")) == 3  # half-open: the 7th is out
    assert cal.span(d("2020-01-04"), d("2020-01-08")) == (d("2020-01-06"), d("2020-01-07"))
    assert cal.span(d("2020-01-04"), d("2020-01-06")) is None  # a weekend holds no trading day
    assert [cal.day(i) for i in (3, 4, 5)] == [d("2020-01-07"), d("2020-01-08"), d("2020-01-09")]
    assert cal.day(7) == d("2020-01-13")  # past the data: weekdays only
    assert cal.advance(d("2020-01-02"), Window(trading_days=2)) == d("2020-01-06")
    # months, then days (2020-01-03), then trading days counted from the first one on or after that
    assert cal.advance(d("2019-12-02"), Window(months=1, days=1, trading_days=1)) == d("2020-01-06")
    with pytest.raises(ConfigError, match="no trading days"):
        Calendar([])


@pytest.mark.parametrize("kwargs, needle", [
    (dict(mode="rolling"), "rolling"),
    (dict(train=Window()), "must be positive"),
    (dict(test=Window(months=40)), "longer than the data"),
    (dict(test=Window(days=20)), "at least 30"),
    (dict(train=Window(months=2)), "too short"),
])
def test_windows_that_cannot_work_are_exit_2(kwargs, needle) -> None:
    args = dict(train=W("1y"), test=W("6m"), mode="sliding") | kwargs
    with pytest.raises(ConfigError, match=needle) as exc:
        fold_windows(BDAYS, "2015-01-01", "2017-12-31", args["train"], args["test"], mode=args["mode"])
    assert exc.value.exit_code == 2


def test_parsing_windows_imports_nothing_heavy() -> None:
    """``trainkit walkforward --help`` and window parsing must stay fast: the package imports
    no numpy, pandas, MLflow or matplotlib until a walk-forward runs."""
    heavy = HEAVY_MODULES + ("matplotlib",)
    probe = ("import sys\nfrom trainkit.walkforward import parse_window\nparse_window('3y')\n"
             f"print([m for m in {heavy!r} if m in sys.modules])")
    out = subprocess.run([PYTHON, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


def test_the_package_depends_on_the_core_not_the_facade() -> None:
    """No module of trainkit.walkforward imports trainkit.manager or the package root (not even
    inside a function): the walk-forward runs on :class:`trainkit.cache.ModelCache`, and the
    manager's facade calls it, not the other way round."""
    import ast
    from pathlib import Path

    import trainkit.walkforward

    for path in Path(trainkit.walkforward.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not {"trainkit", "trainkit.manager"} & set(names), f"{path.name}:{node.lineno} imports {names}"

"""What the ``trainkit`` commands print: for people (one line per symbol, rich tables, a
progress bar on a terminal) and for scripts (``--json``: exactly one JSON document on stdout).

Every command computes through the API and hands its results here, so how a model, a
backtest or a walk-forward looks is decided once, in this module. Errors and warnings go to
stderr, never to the stream of results.

Import discipline: rich is imported inside the functions that draw with it, never for
``trainkit --help``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TextIO

import click

from trainkit.cli.exit import EXIT_RUNTIME
from trainkit.store import contract as C

__all__ = [
    "STATUS_TEXT", "created_text", "emit_json", "error_row", "fold_progress", "one_line", "print_backtest",
    "print_explanation", "print_models", "print_rich", "print_signal", "print_train_dry_run", "print_train_row",
    "print_walkforward", "print_walkforward_dry_run", "result_row", "source_text", "stdout_for", "ui_link",
]

#: what the text output says for each training status
STATUS_TEXT = {"cached": "cached", "trained": "trained", "fallback": "fell back to synthetic"}

_POSITIONS = {-1: "short", 0: "flat", 1: "long"}


# ----------------------------------------------------------------------------- streams
@contextlib.contextmanager
def stdout_for(json_mode: bool) -> Iterator[TextIO]:
    """Yield the stream results go to. In ``--json`` mode anything else that prints to
    stdout while we work (a library's chatter) is sent to stderr, so stdout carries exactly
    one JSON document."""
    real = sys.stdout
    if not json_mode:
        yield real
        return
    with contextlib.redirect_stdout(sys.stderr):
        yield real


def emit_json(stream: TextIO, doc: Any) -> None:
    """The one JSON document of a ``--json`` command (dates and other objects as strings)."""
    stream.write(json.dumps(doc, indent=2, default=str) + "\n")
    stream.flush()


def one_line(exc: BaseException) -> str:
    """An error as the one line the CLI shows (its first line, or its type when it has no text)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def print_rich(out: TextIO, renderable: Any) -> None:
    """Print a rich renderable: in colour on a terminal; piped, as plain text that is not cut
    to 80 columns (run ids must survive ``| grep``) and has no trailing blanks."""
    from rich.console import Console

    if hasattr(out, "isatty") and out.isatty():
        # never squeeze a table into a narrow terminal (rich would cut ids and drop columns):
        # print it at its natural width and let the terminal wrap long rows
        console = Console(file=out, soft_wrap=False, highlight=False)
        natural = console.measure(renderable, options=console.options.update_width(1000)).maximum
        console.width = max(console.width, natural)
        console.print(renderable)
        return
    buf = io.StringIO()
    Console(file=buf, width=250, soft_wrap=False, highlight=False, color_system=None).print(renderable)
    out.write("\n".join(line.rstrip() for line in buf.getvalue().splitlines()) + "\n")
    out.flush()


def _table(*columns: tuple[str, str]) -> Any:
    from rich.table import Table

    table = Table(box=None, header_style="bold", pad_edge=False)
    for name, justify in columns:
        table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    return table


def ui_link(tracking_uri: str, route: str, **ids: str) -> str:
    """The MLflow UI page ``route`` (``contract.UI_*``: it opens in the model-training view) of
    ``ids`` on an http(s) tracking server, else ``""`` (or when an id is unknown). The server's
    address is printed without its credentials."""
    import urllib.parse

    from trainkit.settings import redact_url

    u = urllib.parse.urlsplit(str(tracking_uri or ""))
    if u.scheme.lower() not in ("http", "https") or not all(ids.values()):
        return ""
    base = urllib.parse.urlunsplit((u.scheme, u.netloc.rsplit("@", 1)[-1], u.path.rstrip("/"), "", ""))
    return redact_url(f"{base}/" + route.format(**{k: urllib.parse.quote(str(v), safe="") for k, v in ids.items()}))


def _ui(out: TextIO, link: str) -> None:
    if link:
        out.write(f"  MLflow UI: {link}\n")


# ----------------------------------------------------------------------------- train rows
def per_symbol(out: TextIO, items: Sequence[Any], symbol_of: Callable[[Any], str], run: Callable[[Any], Any],
               render: Callable[[TextIO, Any], None], *, json_mode: bool, verbose: int = 0) -> int:
    """``run(item)`` for each symbol's item (a walk-forward, a study): a trainkit error becomes
    that symbol's error row and one line on stderr, and the others go on; each result is
    printed with ``render`` as it comes (``--json``: one list at the end, ``to_dict()`` each).
    Returns the exit code, the worst of the symbols'."""
    from trainkit.errors import TrainkitError

    docs: list[dict[str, Any]] = []
    codes: list[int] = [0]
    for item in items:
        symbol = symbol_of(item)
        try:
            res = run(item)
        except TrainkitError as exc:
            docs.append(error_row(symbol, exc, verbose))
            codes.append(exc.exit_code)
            if not json_mode:
                sys.stderr.write(f"error: {symbol}: {docs[-1]['error']}\n")
            continue
        docs.append(res.to_dict())
        if not json_mode:
            render(out, res)
    if json_mode:
        emit_json(out, docs)
    return max(codes)


def result_row(res: Any) -> dict[str, Any]:
    """A ``train --json`` row: symbol, status (cached|trained|fallback), model_uri, run_id,
    config_hash, seconds, data_source, fallback_reason."""
    return {
        "symbol": res.config.symbol,
        "status": res.status,
        "model_uri": res.model_uri,
        "run_id": res.run_id,
        "config_hash": res.config_hash,
        "seconds": round(res.seconds, 3),
        "data_source": res.config.data_source,
        "fallback_reason": res.fallback_reason,
    }


def error_row(symbol: str, exc: BaseException | None, verbose: int = 0) -> dict[str, Any]:
    """A failed symbol's row (its one-line error and exit code); with ``-v`` its traceback
    goes to stderr first."""
    if exc is not None and verbose and not isinstance(exc, click.ClickException):
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    return {"symbol": symbol, "status": "error", "error": one_line(exc) if exc is not None else "unknown error",
            "exit_code": int(getattr(exc, "exit_code", EXIT_RUNTIME))}


def print_train_row(out: TextIO, row: dict[str, Any], width: int, link: str = "") -> None:
    """One line per symbol as it finishes (an error: one line on stderr), and the model's
    MLflow UI page on a tracking server."""
    if row["status"] == "error":
        sys.stderr.write(f"error: {row['symbol']}: {row['error']}\n")
        return
    status = STATUS_TEXT.get(row["status"], row["status"])
    line = f"{row['symbol']:<{width}}  {status:<22}  {row['model_uri']}  {row['seconds']:.1f}s"
    if row.get("registered"):
        line += f"  registered {row['registered']}"
    out.write(line + "\n")
    _ui(out, link)
    out.flush()


def print_train_dry_run(out: TextIO, rows: Sequence[dict[str, Any]]) -> None:
    """``train --dry-run``: each config's hash and whether it is cached."""
    width = max(len(r["symbol"]) for r in rows)
    for r in rows:
        if r["cached"]:
            what = f"cached  {r['model_uri']}" + ("  (trained on synthetic fallback data)" if r["status"] == "fallback" else "")
        else:
            what = "not cached (would train)"
        out.write(f"{r['symbol']:<{width}}  {r['config_hash']}  {what}\n")


# ----------------------------------------------------------------------------- explain
def print_explanation(out: TextIO, e: Any) -> None:
    """``explain``: the answer (or why not), the nearest cached configs and the resolved config."""
    c = e.config
    out.write(f"{c.symbol}  config hash {c.config_hash}\n")
    if e.answer is not None:
        a = e.answer
        out.write(f"  cached: {a.model_uri}  ({a.status}, created {created_text(a.created)} UTC)\n")
    else:
        out.write("  not cached: a train request with these options trains a new model\n")
    if e.note:
        out.write(f"  note: {e.note}\n")
    out.writelines(f"  not served: run {n.run_id} ({n.status}): {n.reason}\n" for n in e.not_served)
    if e.answer is None:
        if e.nearest:
            out.write(f"  nearest cached configs of {c.symbol}:\n")
            for near in e.nearest:
                out.write(f"    {near.model.model_uri}  ({len(near.differences)} field(s) differ)\n")
                out.writelines(f"      {d}\n" for d in near.differences)
        else:
            out.write(f"  no cached model of {c.symbol} in this experiment to compare with\n")
    out.write("  resolved config:\n")
    out.writelines(f"    {key} = {value}\n" for key, value in c.to_params().items())
    out.flush()


# ----------------------------------------------------------------------------- cached models
def source_text(m: Any) -> str:
    """Where a model's prices came from (a CSV by its file name; a fallback says so)."""
    eff = m.data_source_effective or m.data_source
    if eff.startswith("csv:"):
        eff = "csv:" + os.path.basename(eff[4:])
    if m.fell_back:
        return f"{eff} (FALLBACK from {m.data_source})"
    return eff


def created_text(iso: str) -> str:
    """An ISO timestamp to the minute, for a table."""
    return iso.replace("T", " ")[:16] if iso else ""


def print_models(out: TextIO, models: Sequence[Any], title: str | None, extra: dict[str, str] | None = None) -> None:
    """The table of cached models (``list``, ``clear``); ``extra``: a last column by run id."""
    if title:
        out.write(title + "\n")
    table = _table(*((name, "left") for name in ("symbol", "algo", "window", "timesteps", "features", "source",
                                                  "status", "hash", "created (UTC)", "run id")))
    if extra is not None:
        table.add_column("kept because")
    for m in models:
        status = m.status + (f" ({', '.join(m.registered)})" if m.registered else "")
        cells = [
            m.symbol, m.algo, f"{m.train_start}..{m.train_end}",
            f"{m.timesteps:,}" if m.timesteps is not None else "?",
            str(m.feature_count) if m.feature_count is not None else "?",
            ("[yellow]" + source_text(m) + "[/yellow]") if m.fell_back else source_text(m),
            status, m.config_hash[:8], created_text(m.created), m.run_id,
        ]
        if extra is not None:
            cells.append(extra.get(m.run_id, ""))
        table.add_row(*cells)
    print_rich(out, table)


def print_ranked(out: TextIO, ranked: Sequence[Any], metric: str, window: tuple[str, str]) -> None:
    """``list --oos-window``: the models measured on the window, best first, the metric a column."""
    if not ranked:
        out.write(f"no model was measured out of sample on {window[0]}..{window[1]} (a fold's test window of "
                  "`trainkit walkforward` or `trainkit tune`)\n")
        return
    out.write(f"models measured out of sample on {window[0]}..{window[1]}, best {metric} first\n")
    table = _table(("symbol", "left"), ("prices", "left"), ("trained on", "left"), (metric, "right"),
                   ("total_return", "right"), ("hash", "left"), ("model", "left"))
    for r in ranked:
        table.add_row(r.symbol, r.prices, f"{r.train_start}..{r.train_end}", f"{r.value:.3f}",
                      _pct(r.metrics.get("total_return", float("nan"))), r.config_hash[:8], r.model_uri)
    print_rich(out, table)


# ----------------------------------------------------------------------------- backtest, signal
def print_backtest(out: TextIO, model_uri: str, start: str, end: str, result: Any) -> None:
    """A backtest's window, data and metrics, and the run it is logged as."""
    from rich.table import Table

    days = f"{result.first_day}..{result.last_day}, {result.n_days} trading days"
    source = result.data_source_effective
    if source != result.data_source:
        source += f" (FALLBACK from {result.data_source})"
    out.write(f"backtest of {model_uri} ({result.symbol}) over {start}..{end} ({days}) on {source}\n")
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in result.metrics.items():
        table.add_row(k, f"{v:,.4f}" if isinstance(v, float) else str(v))
    print_rich(out, table)  # run_backtest already logged its warnings (in-sample window, fallback data) to stderr
    run_id = getattr(result, "run_id", None)
    if run_id and getattr(result, "cached", False):
        out.write(f"read back from run {run_id} in experiment trainkit-backtests (this backtest was cached)\n")
    elif run_id:
        out.write(f"logged as run {run_id} in experiment trainkit-backtests\n")


def _position(p: int) -> str:
    return f"{p:+d} ({_POSITIONS[p]})" if p else "0 (flat)"


def print_signal(out: TextIO, doc: dict[str, Any], one_step: bool) -> None:
    """``signal``: the target position and how it was reached (``one_step``: from ``--position``)."""
    source = doc["data_source_effective"]
    if source != doc["data_source"]:
        source += f" (FALLBACK from {doc['data_source']})"
    out.write(f"{doc['symbol']} {doc['date']}: target position {_position(doc['position'])}, "
              f"held before {_position(doc['previous_position'])}\n")
    how = (f"one step from {_position(doc['start_position'])}" if one_step
           else f"walked from {doc['walk_start']} (flat), {doc['days']} trading days")
    out.write(f"  model {doc['model_uri']}; {how}; prices: {source}\n")
    st = doc.get("promotion")
    if st:
        ev = st["evidence"]
        where = f"  {st['alias']} is version {st['version']}"
        where += (f" since {st['since'].replace('T', ' ').replace('+00:00', ' UTC')} ({st['action']} by {st['user']})" if st["since"]
                  else " (set by hand: no promotion recorded)")
        if ev.get(C.TAG_DEFLATED_SHARPE):
            where += (f"; deflated Sharpe {float(ev[C.TAG_DEFLATED_SHARPE]):.2f} over "
                      f"{ev.get(C.TAG_N_CONFIGS, '?')} configs")
        out.write(where + "\n")


# ----------------------------------------------------------------------------- walk-forward
@contextlib.contextmanager
def fold_progress(symbol: str, total: int, show: bool) -> Iterator[Callable[[Any], None] | None]:
    """A progress bar over a walk-forward's folds on stderr, when ``show`` and stderr is a
    terminal: yields the ``on_fold`` callback that advances it, else ``None``."""
    if not (show and sys.stderr.isatty()):
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[last]}"),
               TimeElapsedColumn())
    with Progress(*columns, console=Console(file=sys.stderr), transient=True) as progress:
        bar = progress.add_task(f"{symbol} folds", total=total, last="")

        def on_fold(fold: Any) -> None:
            progress.update(bar, advance=1, last=f"fold {fold.index} seed {fold.seed}: {fold.status}")

        yield on_fold


def _pct(v: float) -> str:
    return f"{v:+.1%}"


def _describe_plan(p: Any) -> str:
    return (f"{p.mode} {p.train_window} train / {p.test_window} test, step {p.step}, embargo {p.embargo}, "
            f"anchored at {p.anchor}")


def print_walkforward(out: TextIO, wf: Any, link: str = "") -> None:
    """A walk-forward: its folds, the stitched out-of-sample line, the fold statistics, its run (and ``link``)."""
    p, m = wf.plan, wf.metrics
    many = len(p.seeds) > 1
    out.write(f"{p.symbol}: {len(p.windows)} folds{f' × {len(p.seeds)} seeds' if many else ''}, {_describe_plan(p)}; "
              f"{wf.trained} trained, {len(wf.folds) - wf.trained} cached\n")
    table = _table(*((name, justify) for name, justify in (
        ("fold", "right"), ("seed", "right"), ("train", "left"), ("test", "left"), ("model", "left"),
        ("return", "right"), ("buy&hold", "right"), ("sharpe", "right"), ("max dd", "right"), ("trades", "right"),
    ) if many or name != "seed"))
    for f in wf.folds:
        fm = f.metrics
        table.add_row(*([str(f.index)] + ([str(f.seed)] if many else []) + [
            f"{f.train_start}..{f.train_end}", f"{f.test_start}..{f.test_end}", f.status,
            _pct(fm["total_return"]), _pct(fm["buy_and_hold_return"]), f"{fm['sharpe']:.2f}",
            f"{fm['max_drawdown']:.1%}", str(fm["n_trades"]),
        ]))
    first, last = wf.equity.index[0].date(), wf.equity.index[-1].date()
    n = m["n_trades"]
    trades = str(int(n)) if float(n).is_integer() else f"{n:.1f}"
    table.add_row(*(["stitched"] + ([""] if many else []) + [
        "", f"{first}..{last}", f"{len(p.seeds)} seeds" if many else "", _pct(m["total_return"]),
        _pct(m["buy_and_hold_return"]), f"{m['sharpe']:.2f}", f"{m['max_drawdown']:.1%}", str(trades),
    ]), style="bold")
    print_rich(out, table)
    line = (f"fold Sharpe mean {m['fold_sharpe_mean']:.2f}, median {m['fold_sharpe_median']:.2f}, min "
            f"{m['fold_sharpe_min']:.2f}; {m['folds_beating_buy_and_hold']:.0%} of folds beat buy-and-hold")
    if many:
        line += (f"; stitched Sharpe across seeds {m['seed_sharpe_min']:.2f}..{m['seed_sharpe_max']:.2f} "
                 f"(std {m['seed_sharpe_std']:.2f}); the stitched line trades the seeds equally weighted")
    out.write(line + "\n")
    if wf.evidence is not None:
        out.write(evidence_line(wf.evidence).strip() + "\n")
    if wf.run_existed:
        out.write(f"identical to walk-forward run {wf.run_id} in experiment trainkit-walkforward (nothing new logged)\n")
    else:
        out.write(f"logged as run {wf.run_id} in experiment trainkit-walkforward\n")
    _ui(out, link)
    out.flush()


def print_walkforward_dry_run(out: TextIO, docs: Sequence[dict[str, Any]], plans: Sequence[Any]) -> None:
    """``walkforward --dry-run``: per symbol its folds, their config hashes and what is cached."""
    for d, p in zip(docs, plans, strict=True):
        out.write(f"{p.symbol}: {d['n_folds']} folds × {len(p.seeds)} seed(s), {_describe_plan(p)}; "
                  f"{len(d['folds']) - d['would_train']} model(s) cached, {d['would_train']} to train; "
                  f"{d['backtests_cached']} backtest(s) cached\n")
        for r in d["folds"]:
            what = f"cached  {r['model_uri']}" if r["cached"] else "not cached (would train)"
            bt = "  backtest cached" if r["backtest_cached"] else ""
            out.write(f"  fold {r['fold']:>2} seed {r['seed']}  train {r['train_start']}..{r['train_end']}  "
                      f"test {r['test_start']}..{r['test_end']}  {r['config_hash']}  {what}{bt}\n")
    out.flush()


def _value(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def print_tune(out: TextIO, res: Any, link: str = "") -> None:
    """A study after ``tune``: one row per trial (its sampled values, value, models trained
    now), then the best trial (``link``: its walk-forward in the MLflow UI)."""
    names = list(res.space)
    out.write(f"{res.symbol}: study {res.study} — {res.n_trials} finished trials, {res.n_configs} distinct configs, "
              f"{res.trained} models trained now; objective {res.objective} ({res.direction})\n")
    table = _table(("trial", "right"), ("state", "left"), *((n, "right") for n in names), (res.objective, "right"),
                   ("trained/cached", "right"))
    best = res.best
    for t in res.trials:
        table.add_row(str(t.number), t.state, *(_value(t.params.get(n, "")) for n in names),
                      "" if t.value is None else f"{t.value:.3f}", f"{t.trained}/{t.cached}",
                      style="bold" if best is not None and t.number == best.number else None)
    print_rich(out, table)
    if best is None:
        out.write("no complete trial yet\n")
    else:
        hp = ", ".join(f"{k}={_value(v)}" for k, v in best.hyperparams.items())
        out.write(f"best: trial {best.number}, {res.objective} {best.value:.3f} — {hp}\n"
                  f"  walk-forward run {best.walkforward_run_id}; study run {res.study_run_id} in experiment trainkit-tune\n")
        _ui(out, link)
        if res.evidence is not None:
            out.write(evidence_line(res.evidence) + "\n")
    out.flush()


def print_tune_dry_run(out: TextIO, docs: Sequence[dict[str, Any]]) -> None:
    """``tune --dry-run``: per symbol the next trials and what of each is cached."""
    for d in docs:
        state = "exists" if d["exists"] else "would be created"
        out.write(f"{d['symbol']}: study {d['study']} ({state}) holds {d['n_trials']} of {d['trials']} trials; "
                  f"objective {d['objective']}\n")
        for line in d["space"]:
            out.write(f"  {line}\n")
        if not d["next"]:
            out.write("  nothing to run: the study holds its total\n")
            continue
        table = _table(("trial", "right"), ("values", "left"), ("folds", "right"), ("models cached", "right"),
                       ("backtests cached", "right"), ("would train", "right"))
        for r in d["next"]:
            values = ", ".join(f"{k}={_value(v)}" for k, v in r["params"].items())
            note = " (again)" if r["retry"] else ("" if r["exact"] else " (depends on results)")
            table.add_row(f"{r['number']}{note}", values, str(r["folds"]),
                          str(r["models_cached"]), str(r["backtests_cached"]), str(r["would_train"]))
        print_rich(out, table)
    out.flush()


# ----------------------------------------------------------------------------- selection
def evidence_line(ev: Any) -> str:
    """The selection figures of a walk-forward or a study's best trial, one line."""
    if ev is None:
        return "  selection: no evidence (the walk-forward was not logged)"
    pbo = "PBO n/a (fewer than 4 configs on these days)" if ev.pbo is None else f"PBO {ev.pbo.value:.2f}"
    return (f"  selection: deflated Sharpe {ev.deflated_sharpe:.2f} over {ev.n_configs} config"
            f"{'s' if ev.n_configs != 1 else ''} tried on {ev.window}; {pbo}")


def print_promotion(out: TextIO, res: Any, link: str = "") -> None:
    """``promote``: the decision, the figures and what moved (``link``: the version in the UI)."""
    out.write(f"{res.symbol}: walk-forward {res.walkforward_run_id}" + (f" (best of study {res.study})" if res.study else "")
              + f", raw Sharpe {res.evidence.sharpe:.2f}\n{evidence_line(res.evidence)}\n  gate: {res.gates.describe()}\n")
    before = f"version {res.previous_version}" if res.previous_version else "nothing"
    if res.promoted:
        out.write(f"promoted: models:/{res.name}@{res.alias} -> version {res.version} (was {before}); "
                  f"model {res.model_uri}{' (trained now)' if res.trained else ''}\n")
        _ui(out, link)
    elif res.would_promote:
        out.write(f"dry run: {res.reason}; models:/{res.name}@{res.alias} stays at {before}\n")
    else:
        out.write(f"refused: models:/{res.name}@{res.alias} is unchanged\n")
    out.flush()


def print_promotion_history(out: TextIO, name: str, moves: Sequence[Any]) -> None:
    """``promote --history``: every recorded alias move, oldest first."""
    if not moves:
        out.write(f"no recorded promotion of {name}\n")
        return
    table = _table(("when (UTC)", "left"), ("who", "left"), ("action", "left"), ("alias", "left"), ("from", "right"),
                   ("to", "right"), ("deflated Sharpe", "right"), ("configs", "right"), ("PBO", "right"))
    for m in moves:
        e = m.evidence
        table.add_row(m.time.replace("T", " ").replace("+00:00", ""), m.user, m.action, m.alias, m.from_version or "-",
                      m.to_version, e.get(C.TAG_DEFLATED_SHARPE, "")[:5], e.get(C.TAG_N_CONFIGS, ""),
                      e.get(C.TAG_PBO, "")[:5] or "-")
    print_rich(out, table)
    out.flush()

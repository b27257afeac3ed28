"""Calibrate the speed settings of each algorithm against the learning tests (issue 16).

For each algorithm, a small grid of the settings that decide training speed (``n_envs``,
``n_steps`` / ``train_freq``, ``batch_size``, ``n_epochs``, ``learning_rate``,
``gradient_steps``) is trained over several seeds on the learning problems of
``tests/test_learning.py`` (``bench/learning_problems.py``: a planted autocorrelation, the
two-feature volatility-regime edge, a random walk, and the leaky positive control), with the
tests' own timesteps and pass criteria. Every other hyperparameter is trainkit's default.
Each row reports train steps/s next to out-of-sample Sharpe and the tests' margins; the
defaults in ``trainkit/hyperparams.py`` are picked from this table.

Steps/s are timesteps over the *CPU* time of ``train()`` (model construction + ``learn()``,
one torch thread), the best of the point's runs (speed does not depend on the problem or the
seed): unlike wall time, CPU time hardly moves when other processes share the machine, and the
best of ten runs drops what contention is left. ``× schema 1`` is the ratio to the grid's
first row, the defaults of config schema 1. Steps/s of a whole ``train()`` call includes building the
env and the model once (tens of ms).

Usage::

    nice -n 10 .venv/bin/python bench/calibrate.py [--algo ppo|a2c|dqn|all] [--seeds 0 1 2] [--quick]

The full grid (all algorithms, seeds 0 1 2) takes 30-40 minutes on 2 cores, most of it in dqn's
slowest rows, and rewrites its algorithms' sections of ``docs/CALIBRATION.md`` (the text around
them is kept). ``--quick`` is a smoke run (two points per algorithm, seed 0, a tenth of the
timesteps) that prints its table and writes nothing unless ``--out`` is given. ``--label NAME``
writes a section of its own (e.g. ``--seeds 3 4 5 --points 0 4 --label "held-out seeds"``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
if __package__ in (None, ""):  # run as a script: make the repo importable without installing
    sys.path.insert(0, str(REPO))

import learning_problems as lp
import numpy as np

DEFAULT_OUT = REPO / "docs" / "CALIBRATION.md"

#: the grid: per algorithm, the speed settings of each point (every other hyperparameter is
#: trainkit's default). The first point of each is the schema-1 default.
GRIDS: dict[str, list[dict[str, Any]]] = {
    "ppo": [
        {"n_envs": 16, "n_steps": 256, "batch_size": 1024, "n_epochs": 4, "learning_rate": 1e-3},
        {"n_envs": 64, "n_steps": 64, "batch_size": 1024, "n_epochs": 4, "learning_rate": 1e-3},
        {"n_envs": 128, "n_steps": 32, "batch_size": 1024, "n_epochs": 4, "learning_rate": 1e-3},
        {"n_envs": 128, "n_steps": 32, "batch_size": 1024, "n_epochs": 2, "learning_rate": 1e-3},
        {"n_envs": 128, "n_steps": 32, "batch_size": 2048, "n_epochs": 4, "learning_rate": 1e-3},
        {"n_envs": 128, "n_steps": 32, "batch_size": 2048, "n_epochs": 4, "learning_rate": 2e-3},
        {"n_envs": 128, "n_steps": 32, "batch_size": 4096, "n_epochs": 4, "learning_rate": 2e-3},
        {"n_envs": 256, "n_steps": 16, "batch_size": 1024, "n_epochs": 4, "learning_rate": 1e-3},
        {"n_envs": 256, "n_steps": 16, "batch_size": 2048, "n_epochs": 4, "learning_rate": 1e-3},
        {"n_envs": 256, "n_steps": 16, "batch_size": 2048, "n_epochs": 4, "learning_rate": 2e-3},
        {"n_envs": 256, "n_steps": 16, "batch_size": 4096, "n_epochs": 4, "learning_rate": 2e-3},
        {"n_envs": 256, "n_steps": 32, "batch_size": 2048, "n_epochs": 4, "learning_rate": 2e-3},
        # second round, around the best of the first
        {"n_envs": 128, "n_steps": 32, "batch_size": 1024, "n_epochs": 2, "learning_rate": 2e-3},
        {"n_envs": 128, "n_steps": 32, "batch_size": 2048, "n_epochs": 3, "learning_rate": 2e-3},
        {"n_envs": 256, "n_steps": 16, "batch_size": 2048, "n_epochs": 3, "learning_rate": 2e-3},
        {"n_envs": 256, "n_steps": 16, "batch_size": 2048, "n_epochs": 4, "learning_rate": 3e-3},
        {"n_envs": 256, "n_steps": 16, "batch_size": 4096, "n_epochs": 4, "learning_rate": 4e-3},
    ],
    "a2c": [
        {"n_envs": 16, "n_steps": 16, "learning_rate": 1e-3},
        {"n_envs": 64, "n_steps": 8, "learning_rate": 1e-3},
        {"n_envs": 64, "n_steps": 16, "learning_rate": 1e-3},
        {"n_envs": 64, "n_steps": 8, "learning_rate": 2e-3},
        {"n_envs": 128, "n_steps": 8, "learning_rate": 1e-3},
        {"n_envs": 128, "n_steps": 8, "learning_rate": 2e-3},
        {"n_envs": 128, "n_steps": 16, "learning_rate": 2e-3},
        {"n_envs": 256, "n_steps": 4, "learning_rate": 2e-3},
        {"n_envs": 256, "n_steps": 8, "learning_rate": 2e-3},
        {"n_envs": 256, "n_steps": 8, "learning_rate": 4e-3},
        # second round: a bigger batch wants a bigger step
        {"n_envs": 128, "n_steps": 8, "learning_rate": 4e-3},
        {"n_envs": 256, "n_steps": 4, "learning_rate": 4e-3},
        {"n_envs": 128, "n_steps": 16, "learning_rate": 4e-3},
        {"n_envs": 256, "n_steps": 16, "learning_rate": 4e-3},
        {"n_envs": 256, "n_steps": 8, "learning_rate": 8e-3},
    ],
    "dqn": [
        {"n_envs": 4, "train_freq": 4, "gradient_steps": 1, "batch_size": 256, "learning_rate": 1e-4},
        {"n_envs": 16, "train_freq": 1, "gradient_steps": 1, "batch_size": 256, "learning_rate": 1e-4},
        {"n_envs": 16, "train_freq": 1, "gradient_steps": 1, "batch_size": 256, "learning_rate": 3e-4},
        {"n_envs": 32, "train_freq": 1, "gradient_steps": 1, "batch_size": 256, "learning_rate": 3e-4},
        {"n_envs": 32, "train_freq": 1, "gradient_steps": 1, "batch_size": 512, "learning_rate": 3e-4},
        {"n_envs": 64, "train_freq": 1, "gradient_steps": 2, "batch_size": 512, "learning_rate": 3e-4},
        {"n_envs": 64, "train_freq": 1, "gradient_steps": 1, "batch_size": 512, "learning_rate": 5e-4},
        {"n_envs": 64, "train_freq": 1, "gradient_steps": 1, "batch_size": 1024, "learning_rate": 1e-3},
        {"n_envs": 128, "train_freq": 1, "gradient_steps": 1, "batch_size": 1024, "learning_rate": 1e-3},
        # second round: fewer, larger gradient steps memorise the training days less
        {"n_envs": 256, "train_freq": 1, "gradient_steps": 1, "batch_size": 2048, "learning_rate": 1e-3},
        {"n_envs": 256, "train_freq": 1, "gradient_steps": 1, "batch_size": 2048, "learning_rate": 1e-3,
         "target_update_interval": 5_000},
        {"n_envs": 256, "train_freq": 2, "gradient_steps": 1, "batch_size": 2048, "learning_rate": 1e-3},
        {"n_envs": 256, "train_freq": 2, "gradient_steps": 1, "batch_size": 4096, "learning_rate": 2e-3},
    ],
}

#: learning problems in table order (tests/test_learning.py's order)
PROBLEM_KEYS = ("autocorr", "regime", "walk", "leak")


def machine() -> dict[str, str]:
    """What the numbers were measured on."""
    import stable_baselines3
    import torch

    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    nproc = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return {
        "date": dt.date.today().isoformat(),
        "nproc": str(nproc),
        "cpu": cpu,
        "torch": torch.__version__,
        "sb3": stable_baselines3.__version__,
        "python": platform.python_version(),
        "load": load,
    }


_LABELLED = ("n_envs", "n_steps", "batch_size", "n_epochs", "learning_rate", "train_freq", "gradient_steps")


def label(algo: str, point: dict[str, Any]) -> str:
    lr = f"lr {point['learning_rate']:g}"
    if algo == "ppo":
        text = f"{point['n_envs']}×{point['n_steps']}, batch {point['batch_size']}, {point['n_epochs']} epochs, {lr}"
    elif algo == "a2c":
        text = f"{point['n_envs']}×{point['n_steps']}, {lr}"
    else:
        text = (f"{point['n_envs']} envs, train_freq {point['train_freq']}, {point['gradient_steps']} grad step(s), "
                f"batch {point['batch_size']}, {lr}")
    return ", ".join([text, *(f"{k} {v}" for k, v in point.items() if k not in _LABELLED)])


def run_point(algo: str, point: dict[str, Any], seeds: tuple[int, ...], scale: float) -> dict[str, Any]:
    """Train the point on every problem and seed; its rows, criteria and throughput."""
    result: dict[str, Any] = {"algo": algo, "point": point, "problems": {}}
    rates: list[float] = []
    wall_rates: list[float] = []
    for key in PROBLEM_KEYS:
        p = lp.PROBLEMS[key]()
        p_seeds = seeds if len(p.seeds) > 1 else seeds[:1]  # the leaky control trains one seed
        ts = max(1_000, int(p.timesteps * scale))
        rows = []
        for s in p_seeds:
            r = lp.train_eval(p, s, algo=algo, hyperparams=point, timesteps=ts)
            rows.append(r)
            rates.append(r["timesteps"] / r["cpu_s"])
            wall_rates.append(r["timesteps"] / r["wall_s"])
            print(f"  {algo} {label(algo, point)} | {p.title} seed {s}: out {r['out']:+.2f} "
                  f"({r['timesteps'] / r['cpu_s']:,.0f} steps/s)", file=sys.stderr, flush=True)
        crit = p.criteria(rows)
        result["problems"][key] = {
            "outs": [r["out"] for r in rows],
            "ins": [r["in"] for r in rows],
            "seeds": list(p_seeds),
            "criteria": [{"name": c.name, "value": c.value, "threshold": c.threshold, "ok": c.ok,
                          "margin": c.margin} for c in crit],
            "ok": all(c.ok for c in crit),
            "margin": min(c.margin for c in crit),
        }
        if key == "regime":
            result["problems"][key]["follow_spread"] = [round(c - w, 3) for c, w in (lp.regime_follow(p, r) for r in rows)]
    result["steps_per_s"] = max(rates)
    result["median_steps_per_s"] = float(np.median(rates))
    result["wall_steps_per_s"] = max(wall_rates)
    result["passed"] = sum(v["ok"] for v in result["problems"].values())
    return result


def table(algo: str, results: list[dict[str, Any]], info: dict[str, str], seeds: tuple[int, ...], scale: float,
          title: str = "") -> str:
    """One algorithm's markdown section (without its markers)."""
    from trainkit.hyperparams import ALGORITHM_DEFAULTS

    defaults = ALGORITHM_DEFAULTS[algo]
    schema1 = GRIDS[algo][0]
    base_res = next((r for r in results if r["point"] == schema1), results[0])
    base = base_res["steps_per_s"]
    ratio_head = "× schema 1" if base_res["point"] == schema1 else "× first row"
    ts = ", ".join(f"{lp.PROBLEMS[k]().title} {int(lp.PROBLEMS[k]().timesteps * scale):,}" for k in PROBLEM_KEYS)
    lines = [
        f"### {algo}{' — ' + title if title else ''}",
        "",
        (f"Measured {info['date']} on {info['nproc']} CPUs (`nproc`), {info['cpu']}; torch {info['torch']}, "
         f"stable-baselines3 {info['sb3']}, Python {info['python']}; load average at start {info['load']}. "
         f"Seeds {' '.join(map(str, seeds))} (the leaky control: seed {seeds[0]}); timesteps: {ts}."),
        "",
        (f"| setting | steps/s (CPU) | {ratio_head} | autocorr OOS (margin) | regime OOS (margin) "
         "| random walk OOS (margin) | leak OOS | tests passed |"),
        "|---|---:|---:|---|---|---|---:|---:|",
    ]
    for res in results:
        point = res["point"]
        tag = ""
        if all(defaults.get(k) == v for k, v in point.items()):
            tag = " **(default)**"
        elif point == schema1:
            tag = " (schema-1 default)"
        cells = []
        for key in PROBLEM_KEYS[:3]:
            pr = res["problems"][key]
            mark = "" if pr["ok"] else " ✗"
            cells.append(f"{' / '.join(f'{o:.2f}' for o in pr['outs'])} ({pr['margin']:+.2f}){mark}")
        leak = res["problems"]["leak"]
        cells.append(f"{leak['outs'][0]:.1f}{'' if leak['ok'] else ' ✗'}")
        lines.append(
            f"| {label(algo, point)}{tag} | {res['steps_per_s']:,.0f} | {res['steps_per_s'] / base:.1f}× | "
            + " | ".join(cells) + f" | {res['passed']}/{len(PROBLEM_KEYS)} |"
        )
    lines += [
        "",
        ("OOS: out-of-sample Sharpe per seed, net of 5 bps costs. Margin: the smallest distance of the "
         "test's criteria from their bounds (negative, ✗: that test would fail)."),
    ]
    return "\n".join(lines)


def write_sections(path: Path, sections: dict[str, str]) -> None:
    """Replace each algorithm's marked section of ``path`` (append it if absent); keep the rest."""
    text = path.read_text() if path.exists() else "# Calibration of the training defaults\n\n"
    for algo, body in sections.items():
        block = f"<!-- calibrate:{algo} -->\n{body}\n<!-- /calibrate:{algo} -->"
        pattern = re.compile(rf"<!-- calibrate:{re.escape(algo)} -->.*?<!-- /calibrate:{re.escape(algo)} -->", re.DOTALL)
        if pattern.search(text):
            text = pattern.sub(lambda _m, b=block: b, text)
        else:
            text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algo", choices=[*GRIDS, "all"], default="all")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(lp.SEEDS))
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: two points per algorithm, the first seed, a tenth of the timesteps")
    parser.add_argument("--points", type=int, nargs="+", help="only these grid rows (0-based) of each algorithm")
    parser.add_argument("--out", type=Path, help=f"markdown file to update (default {DEFAULT_OUT.relative_to(REPO)}; "
                        "none with --quick)")
    parser.add_argument("--label", default="", help="a section of its own (e.g. 'held-out seeds'): the "
                        "algorithm's main section is left alone")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args(argv)

    algos = list(GRIDS) if args.algo == "all" else [args.algo]
    seeds = tuple(args.seeds[:1] if args.quick else args.seeds)
    scale = 0.1 if args.quick else 1.0
    out = args.out if args.out is not None else (None if args.quick else DEFAULT_OUT)

    import torch

    torch.set_num_threads(1)
    info = machine()
    # pay the first call's costs (torch's lazy imports, first kernels) before anything is timed
    lp.train_eval(lp.autocorrelated(), 0, timesteps=2_000, hyperparams={"n_envs": 4, "n_steps": 64, "batch_size": 256})
    sections: dict[str, str] = {}
    raw: dict[str, Any] = {"machine": info, "seeds": list(seeds), "scale": scale, "results": {}}
    t0 = time.perf_counter()
    for algo in algos:
        grid = GRIDS[algo]
        idx = args.points if args.points else (range(2) if args.quick else range(len(grid)))
        results = []
        for i in idx:
            print(f"{algo} [{i}] {label(algo, grid[i])}", file=sys.stderr, flush=True)
            results.append(run_point(algo, grid[i], seeds, scale))
        raw["results"][algo] = results
        key = f"{algo}:{re.sub(r'[^a-z0-9]+', '-', args.label.lower()).strip('-')}" if args.label else algo
        sections[key] = table(algo, results, info, seeds, scale, args.label)
        print("\n" + sections[key] + "\n", flush=True)
        if out is not None:
            write_sections(out, {key: sections[key]})  # after each algorithm: a crash keeps what is done
        if args.json:
            args.json.write_text(json.dumps(raw, indent=1, default=lambda o: np.asarray(o).tolist()))
    print(f"calibration took {time.perf_counter() - t0:.0f} s" + (f"; wrote {out}" if out else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Write daily prices with a planted edge, to see `trainkit promote` accept what is real.

    python examples/planted_edge.py edge.csv [--seed 0]

The log returns mean-revert: an AR(1) with coefficient -0.6, no drift, 20 % annual volatility,
business days 2014-01-01..2017-12-29. Yesterday's move predicts today's, the features show it,
and a small myopic PPO learns it (``--hp gamma=0 --hp learning_rate=0.003 --hp n_epochs=10``,
8000 timesteps a fold). A drift would not do: with short selling a small agent does not learn
"always long", and without it any agent profits. tests/test_promote.py uses the same data.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd


def planted_edge(path: str | Path, seed: int = 0, ar: float = -0.6, vol: float = 0.2) -> Path:
    """Write the CSV (Date, Open, High, Low, Close, Volume) to ``path`` and return it."""
    rng = np.random.default_rng(seed)
    days = pd.bdate_range("2014-01-01", "2017-12-29")
    shocks = rng.standard_normal(len(days)) * vol / np.sqrt(252) * np.sqrt(1 - ar * ar)
    r = np.empty(len(days))
    prev = 0.0
    for t, e in enumerate(shocks):
        prev = ar * prev + e
        r[t] = prev
    close = 100 * np.exp(np.cumsum(r))
    open_ = close * np.exp(-0.7 * r)  # part-way from the previous close
    span = np.abs(rng.standard_normal((2, len(days)))) * vol / np.sqrt(252) * 0.5
    frame = pd.DataFrame({"Date": days.strftime("%Y-%m-%d"), "Open": open_,
                          "High": np.maximum(open_, close) * np.exp(span[0]),
                          "Low": np.minimum(open_, close) * np.exp(-span[1]), "Close": close, "Volume": 1_000_000})
    frame.to_csv(path, index=False)
    return Path(path)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(planted_edge(args.path, args.seed))

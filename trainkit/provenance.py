"""What a request's prices are and where they came from — one type for the data layer (which
fetches them) and the store (which records it on the model). Stdlib only: both import it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class DataProvenance:
    """The prices a model is trained (or a backtest is run) on, and their provenance.

    ``requested_source``: ``"yfinance"``, ``"synthetic"`` or ``"csv:/abs/path"``;
    ``effective_source``: the source that delivered; ``fallback_reason``: why they differ
    (``None`` when they do not); ``digest``: the sha256 of the prices
    (:func:`trainkit.data.base.frame_digest`); ``data_seed``: the synthetic seed when synthetic
    prices were used; ``frame``: the daily OHLCV frame itself when this came from a fetch
    (``None`` when it was read back from a stored model)."""

    requested_source: str
    effective_source: str
    fallback_reason: str | None
    digest: str
    data_seed: int | None = None
    frame: Any = field(default=None, compare=False, repr=False)

    @property
    def fell_back(self) -> bool:
        return self.effective_source != self.requested_source

    def to_dict(self) -> dict[str, Any]:
        """What a stored model records of its data (``feature_spec.json``'s ``data``)."""
        return {"requested_source": self.requested_source, "effective_source": self.effective_source,
                "fallback_reason": self.fallback_reason, "digest": self.digest}


#: A fetch's answer is its provenance with the frame: the data layer's historical name.
FetchResult = DataProvenance

"""trainkit: reinforcement-learning trading agents, trained once per configuration and kept in MLflow.

Public API (stable): ``TrainingManager``, ``TrainConfig``, ``load_model``. Heavy dependencies
(torch, stable-baselines3, mlflow) are imported lazily so that ``import trainkit`` and the
CLI's ``--help`` stay fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from trainkit.config import TrainConfig
from trainkit.version import __version__

__all__ = ["TrainConfig", "TrainingManager", "load_model", "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from trainkit.manager import TrainingManager


def __getattr__(name: str) -> Any:
    if name == "TrainingManager":
        from trainkit.manager import TrainingManager

        return TrainingManager
    raise AttributeError(f"module 'trainkit' has no attribute {name!r}")


def load_model(uri: str) -> Any:
    """Load the stable-baselines3 model behind a ``runs:/…`` or ``models:/…`` URI, after
    verifying its bytes against the sha256 recorded when it was trained."""
    from trainkit.store import load_model as _load

    return _load(uri)

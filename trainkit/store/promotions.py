"""Promotions in MLflow: model versions with their evidence, alias moves, and the record of
every move (experiment ``trainkit-promotions``), because MLflow keeps no alias history
(mlflow #2169). The decision is made above (:mod:`trainkit.promotion`); here are the writes, in
a fixed order, and the reads of the history.

The order of a promotion (docs/ARCHITECTURE.md, *Honest selection*):

1. the model version, created with its evidence and ``trainkit.promoted=false`` in one call, so a
   version the alias never reaches says so even when the registry dies right after;
2. the alias;
3. ``trainkit.promoted=true`` on the version;
4. the record (a FINISHED run in ``trainkit-promotions``). When it cannot be written, the alias
   goes back where it was and the version back to ``false``: no alias move without its record.

Registry calls go to the registry URI (``MLFLOW_REGISTRY_URI``, else the tracking URI) and their
errors name it; the record goes to the tracking store.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from trainkit import settings
from trainkit.errors import StoreError
from trainkit.store import contract as C

log = logging.getLogger("trainkit")

__all__ = ["AliasMove", "Promotions"]


@dataclass(frozen=True)
class AliasMove:
    """One recorded alias move: ``action`` (promote or rollback) of ``alias`` of registered
    model ``name`` from ``from_version`` (``None``: it pointed nowhere) to ``to_version``, by
    ``user`` at ``time`` (ISO 8601, UTC), with the evidence it was made on (tags)."""

    run_id: str
    name: str
    alias: str
    action: str
    from_version: str | None
    to_version: str
    user: str
    time: str
    evidence: Mapping[str, str] = field(default_factory=dict)
    started_ms: int = 0  #: the record's start time (orders moves within one second)

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "name": self.name, "alias": self.alias, "action": self.action,
                "from_version": self.from_version, "to_version": self.to_version, "user": self.user,
                "time": self.time, "evidence": dict(self.evidence)}


#: the version tags that are the evidence (copied onto the record)
EVIDENCE_TAGS = (C.TAG_DEFLATED_SHARPE, C.TAG_PBO, C.TAG_N_CONFIGS, C.TAG_SHARPE, C.TAG_STUDY,
                 C.TAG_WALKFORWARD_RUN_ID, C.TAG_GATE)


def _move(run: Any) -> AliasMove:
    t = run.data.tags
    return AliasMove(run_id=run.info.run_id, name=t.get(C.TAG_REGISTERED_NAME, ""), alias=t.get(C.TAG_ALIAS, ""),
                     action=t.get(C.TAG_ACTION, ""), from_version=t.get(C.TAG_FROM_VERSION) or None,
                     to_version=t.get(C.TAG_TO_VERSION, ""), user=t.get(C.TAG_USER, ""),
                     time=_iso(int(run.info.start_time or 0)),
                     evidence={k: t[k] for k in EVIDENCE_TAGS if t.get(k)}, started_ms=int(run.info.start_time or 0))


class Promotions:
    """The registry and the promotion record of one store (``store``: a ModelStore)."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.conn = store.conn
        self.client = store.conn.client

    def registry_errors(self, what: str) -> Any:
        return self.conn.registry_errors(what)

    # ---- reads
    def alias_version(self, name: str, alias: str) -> str | None:
        """The version ``alias`` of ``name`` points at, or ``None`` (no such model or alias)."""
        from mlflow.exceptions import MlflowException

        with self.registry_errors(f"reading models:/{name}@{alias}"):
            try:
                return str(self.client.get_model_version_by_alias(name, alias).version)
            except MlflowException as exc:
                if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
                    return None
                raise

    def evidence_of(self, name: str, version: str) -> dict[str, str]:
        """The evidence tags of a model version (empty for one registered by hand)."""
        with self.registry_errors(f"reading models:/{name}/{version}"):
            tags = dict(self.client.get_model_version(name, version).tags or {})
        return {k: tags[k] for k in EVIDENCE_TAGS if tags.get(k)}

    def history(self, name: str, alias: str | None = None) -> list[AliasMove]:
        """Every recorded move of ``name``'s aliases (of ``alias`` only, when given), oldest
        first. Reads only: no experiment is created."""
        exp = self.conn.experiment_id_if_exists(C.PROMOTION_EXPERIMENT)
        if exp is None:
            return []
        flt = f"tags.`{C.TAG_REGISTERED_NAME}` = {C.quote(name)} and attributes.status = 'FINISHED'"
        if alias:
            flt += f" and tags.`{C.TAG_ALIAS}` = {C.quote(alias)}"
        moves = [_move(r) for r in self.conn.search([exp], flt)]
        return sorted(moves, key=lambda m: (m.started_ms, m.run_id))

    def standing(self, name: str, alias: str, version: str) -> dict[str, Any]:
        """Since when ``alias`` points at ``version`` and on what evidence (``trainkit signal``):
        the latest recorded move to it (``since``/``action``/``user`` are ``None`` when it was
        pointed there by hand, e.g. ``trainkit register --alias``), and the version's evidence
        tags. Reads only."""
        moves = [m for m in self.history(name, alias) if m.to_version == str(version)]
        last = moves[-1] if moves else None
        return {"name": name, "alias": alias, "version": str(version),
                "since": last.time if last else None, "action": last.action if last else None,
                "user": last.user if last else None, "record_run_id": last.run_id if last else None,
                "evidence": self.evidence_of(name, str(version))}

    # ---- writes, in order
    def create_version(self, model_uri: str, name: str, tags: Mapping[str, str]) -> str:
        """Step 1: a new version of ``name`` for the model, with ``tags`` and ``promoted=false``."""
        _name, version = self.store.catalog.register(model_uri, name, tags={**tags, C.TAG_PROMOTED: "false"})
        return version

    def move(self, name: str, alias: str, version: str, previous: str | None, *, action: str,
             evidence: Mapping[str, str]) -> AliasMove:
        """Steps 2–4: point ``alias`` at ``version``, mark it promoted and record the move. Any
        failure puts the alias back where it was (best effort, and the error says whether it
        worked) and raises: no alias move stands without its record."""
        try:
            with self.registry_errors(f"pointing models:/{name}@{alias} at version {version}"):
                self.client.set_registered_model_alias(name, alias, version)
            with self.registry_errors(f"tagging models:/{name}/{version}"):
                self.client.set_model_version_tag(name, version, C.TAG_PROMOTED, "true")
            return self._record(name, alias, version, previous, action=action, evidence=evidence)
        except BaseException as exc:
            restored = self._undo(name, alias, version, previous, action=action)
            if isinstance(exc, StoreError):
                where = f"version {previous}" if previous else "nothing"
                state = (f"models:/{name}@{alias} points at {where} again" if restored else
                         f"models:/{name}@{alias} could not be put back to {where}: check it")
                raise StoreError(f"{exc}; {state}") from exc
            raise

    def _record(self, name: str, alias: str, version: str, previous: str | None, *, action: str,
                evidence: Mapping[str, str]) -> AliasMove:
        """Step 4: the move as a FINISHED run in ``trainkit-promotions`` (FAILED if logging it fails)."""
        import time

        from trainkit.store.runs import new_run

        user = _user()
        tags = {C.TAG_REGISTERED_NAME: name, C.TAG_ALIAS: alias, C.TAG_ACTION: action,
                C.TAG_FROM_VERSION: previous or "", C.TAG_TO_VERSION: version, C.TAG_USER: user, **evidence,
                C.TAG_NOTE: (f"{action}: models:/{name}@{alias} from "
                             f"{'version ' + previous if previous else 'nothing'} to version {version}")}
        started = int(time.time() * 1000)
        with self.conn.errors("recording the promotion"):
            exp = self.conn.experiment_id(C.PROMOTION_EXPERIMENT)
            with new_run(self.conn, exp, run_name=f"{name}@{alias}-v{version}-{action}", tags=tags) as rid:
                pass
        return AliasMove(run_id=rid, name=name, alias=alias, action=action, from_version=previous, to_version=version,
                         user=user, time=_iso(started), evidence={k: evidence[k] for k in EVIDENCE_TAGS if evidence.get(k)},
                         started_ms=started)

    def _undo(self, name: str, alias: str, version: str, previous: str | None, *, action: str) -> bool:
        """Put the alias back (``True`` when that worked; the registry may be what failed) and,
        for a promotion, the version's ``promoted`` tag back to ``false``. A rollback's target was
        promoted before and stays so."""
        restored = True
        try:
            if self.alias_version(name, alias) != previous:  # the move may have failed, or only its answer
                if previous:
                    self.client.set_registered_model_alias(name, alias, previous)
                else:
                    self.client.delete_registered_model_alias(name, alias)
        except Exception as exc:  # noqa: BLE001 - reported to the user by the caller
            log.debug("could not put models:/%s@%s back: %s", name, alias, exc)
            restored = False
        if action == "promote":
            with contextlib.suppress(Exception):
                self.client.set_model_version_tag(name, version, C.TAG_PROMOTED, "false")
        return restored


def _iso(ms: int) -> str:
    return _dt.datetime.fromtimestamp(ms / 1000, tz=_dt.timezone.utc).isoformat(timespec="seconds")


def _user() -> str:
    """Who moves the alias: the tracking server's user when there is one, else the login."""
    import getpass

    return settings.MLFLOW_TRACKING_USERNAME.get() or getpass.getuser()

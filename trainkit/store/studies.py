"""Studies of ``trainkit tune`` in the tracking store, through MLflow's API only.

A study lives where the models live, so a team tunes one study from several machines with
nothing but the MLflow server (and its permissions): never a second database, never Optuna's
tables inside MLflow's database (both use Alembic's version table: mlflow #3374, optuna #2866).
This module knows runs and tags, not Optuna: :mod:`trainkit.search` turns these records into an
Optuna study in memory for every ask (``docs/ARCHITECTURE.md``, *The search*).

The layout (experiment ``trainkit-tune``, names in :mod:`trainkit.store.contract`):

* **a study run** per study (its run name is the study's name), FINISHED from the start; its
  ``trainkit.study_identity`` tag says what the study is (symbol, window, train options, space,
  objective), so a second command that means another study is refused before it writes; the
  best trial's params and value, the count of distinct configs tried and the pictures are
  logged on it after each command;
* **a trial run** per trial, nested under it: its number, state, sampled values (tags, as the
  sampler sees them, and ``hp.<name>`` params as a person reads them), its running
  out-of-sample value per fold, its value, the walk-forward run it read or created. A RUNNING
  trial carries a lease's heartbeat (:class:`~trainkit.store.lease.Lease`): one whose tuner
  died goes stale, and a later command takes it up again.

Where MLflow's own ``mlflow.optuna.MlflowStorage`` has gaps, this is what covers them:

* **one study per name**: :meth:`StudyStore.open` looks the study up first; two commands that
  create it at once both keep the oldest run (the lease's tie rule) and delete their own;
* **atomic trial numbers**: numbers are given out under the study's lease
  (:meth:`StudyStore.claiming`), which holds across processes and machines;
* **paged listing** (:meth:`Connection.search <trainkit.store.connection.Connection.search>`);
* **trainkit's tracking URI**, never the global one; **no write-behind thread**: every write is
  synchronous, so trainkit's fast exit loses nothing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from trainkit.store import contract as C
from trainkit.store.lease import Lease
from trainkit.store.records import is_stale, lease_order

log = logging.getLogger("trainkit")

__all__ = ["StudyRecord", "StudyStore", "TrialRecord", "TrialRun", "best_trial"]

#: a trial's state -> the MLflow status of its run (a failed trial's run is FAILED, or KILLED on Ctrl-C)
_RUN_STATUS = {"running": "RUNNING", "complete": "FINISHED", "pruned": "FINISHED", "fail": "FAILED"}


@dataclass(frozen=True)
class StudyRecord:
    """A study as stored: its run, name and identity (what it is a study of)."""

    run_id: str
    name: str
    identity: Mapping[str, Any]
    direction: str = "maximize"  #: of its objective (the study run's param)


@dataclass(frozen=True)
class TrialRecord:
    """A trial as stored. ``params``: the sampled values as the sampler sees them; ``running``:
    fold -> running out-of-sample value; ``live``: a RUNNING trial whose tuner still beats."""

    run_id: str
    number: int
    state: str
    params: Mapping[str, Any]
    value: float | None = None
    running: Mapping[int, float] = field(default_factory=dict)
    walkforward_run_id: str | None = None
    trained: int = 0
    config_key: str = ""
    live: bool = False
    start_time: int = 0

    @property
    def counts(self) -> bool:
        """Does the trial count toward the study's total (``--trials``)?"""
        return self.state in C.COUNTED_TRIAL_STATES


def best_trial(trials: Sequence[Any], direction: str) -> Any | None:
    """The best complete trial with a value (``direction``: ``maximize`` or ``minimize``), the
    earliest on a tie; ``None`` when there is none. The one rule, for a study's result and for
    ``promote``."""
    done = [t for t in trials if t.state == "complete" and t.value is not None]
    if not done:
        return None
    sign = -1.0 if direction == "minimize" else 1.0
    return max(done, key=lambda t: (sign * float(t.value), -t.number))


def _trial(run: Any, now: float) -> TrialRecord:
    tags, metrics = run.data.tags, run.data.metrics
    state = tags.get(C.TAG_TRIAL_STATE, "fail")
    live = run.info.status == "RUNNING" and state == "running" and not is_stale(run, now)
    if state == "running" and not live:
        state = "fail"  # its tuner died (or was killed) without saying so: taken up again later
    return TrialRecord(
        run_id=run.info.run_id, number=int(tags[C.TAG_TRIAL_NUMBER]), state=state,
        params=json.loads(tags.get(C.TAG_TRIAL_PARAMS) or "{}"),
        value=metrics.get("value") if state == "complete" else None,
        running={int(k): float(v) for k, v in json.loads(tags.get(C.TAG_TRIAL_RUNNING) or "{}").items()},
        walkforward_run_id=tags.get(C.TAG_WALKFORWARD_RUN_ID) or None, trained=int(metrics.get("trained", 0)),
        config_key=tags.get(C.TAG_CONFIG_KEY, ""), live=live, start_time=run.info.start_time or 0,
    )


class TrialRun:
    """A trial this process is running: its run (RUNNING, with a heartbeat) until it ends in
    exactly one of :meth:`finish` or :meth:`fail`."""

    def __init__(self, studies: StudyStore, record: TrialRecord, lease: Lease) -> None:
        self.studies, self.record, self.lease = studies, record, lease
        self.running: dict[int, float] = dict(record.running)
        self._reported: set[int] = set(record.running)  # already in the run's running_value history

    @property
    def run_id(self) -> str:
        return self.record.run_id

    @property
    def number(self) -> int:
        return self.record.number

    def report(self, fold: int, value: float) -> None:
        """The running out-of-sample value after ``fold`` (what a pruner compares)."""
        from mlflow.entities import Metric

        self.running[fold] = float(value)
        self._reported.add(fold)
        client = self.studies.client
        with self.studies.conn.errors("recording a trial"):
            client.log_batch(self.run_id, metrics=[Metric("running_value", float(value), int(time.time() * 1000), fold)],
                             tags=_tags({C.TAG_TRIAL_RUNNING: json.dumps(self.running, sort_keys=True)}))

    def finish(self, state: str, *, value: float | None, walkforward_run_id: str | None, trained: int,
               metrics: Mapping[str, float] | None = None) -> TrialRecord:
        """End as ``complete`` (with its ``value``) or ``pruned``: the values first, then the
        state, so a reader never sees a complete trial without its value."""
        from trainkit.store.runs import as_metrics

        from mlflow.entities import Metric

        out = {"trained": float(trained), **({} if metrics is None else dict(metrics))}
        if value is not None:
            out["value"] = float(value)
        tags = {C.TAG_TRIAL_STATE: state, C.TAG_TRIAL_RUNNING: json.dumps(self.running, sort_keys=True)}
        if walkforward_run_id:
            tags[C.TAG_WALKFORWARD_RUN_ID] = walkforward_run_id
        now = int(time.time() * 1000)
        history = [Metric("running_value", v, now, k) for k, v in self.running.items() if k not in self._reported]
        client = self.studies.client
        with self.studies.conn.errors("recording a trial"):
            client.log_batch(self.run_id, metrics=[*as_metrics(out), *history], tags=_tags(tags))
        self.lease.drop_tags()
        with self.studies.conn.errors("recording a trial"):
            client.set_terminated(self.run_id, status=_RUN_STATUS[state])
        return TrialRecord(self.run_id, self.number, state, self.record.params, value, dict(self.running),
                           walkforward_run_id, trained, self.record.config_key)

    def fail(self, reason: str, *, interrupted: bool = False) -> None:
        """End as ``fail``: FAILED (an error) or KILLED (Ctrl-C). Never raises: it runs while
        another error or an interrupt is on its way out."""
        with contextlib.suppress(Exception):
            self.studies.client.set_tag(self.run_id, C.TAG_TRIAL_STATE, "fail")
        self.lease.fail(reason, status="KILLED" if interrupted else "FAILED")


def _tags(d: Mapping[str, str]) -> list[Any]:
    from trainkit.store.runs import as_tags

    return as_tags(dict(d))


class StudyStore:
    """Studies and their trials in the ``trainkit-tune`` experiment of one tracking store."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.conn = store.conn
        self.client = store.client

    def _experiment(self, create: bool = True) -> str | None:
        if create:
            return self.conn.experiment_id(C.TUNE_EXPERIMENT)
        return self.conn.experiment_id_if_exists(C.TUNE_EXPERIMENT)

    # ---- studies
    def find(self, name: str) -> StudyRecord | None:
        """The study named ``name``, or ``None``. Reads only."""
        exp = self._experiment(create=False)
        if exp is None:
            return None
        runs = self.conn.search([exp], f"tags.`{C.TAG_STUDY}` = {C.quote(name)} and tags.`{C.TAG_STUDY_IDENTITY}` != ''")
        runs = [r for r in runs if C.TAG_PARENT_RUN not in r.data.tags]
        if not runs:
            return None
        run = min(runs, key=lease_order)  # two made at once: the oldest is the study
        return StudyRecord(run.info.run_id, name, json.loads(run.data.tags[C.TAG_STUDY_IDENTITY]),
                           run.data.params.get("direction", "maximize"))

    def open(self, name: str, identity: Mapping[str, Any], *, params: Mapping[str, str], tags: Mapping[str, str]) -> StudyRecord:
        """The study named ``name``, created when missing (the caller compared identities first).
        Two commands creating it at once keep the oldest run and delete the other."""
        found = self.find(name)
        if found is not None:
            return found
        from trainkit.store.runs import as_params

        self._require_edit(name)
        exp = self._experiment()
        all_tags = {**tags, C.TAG_STUDY: name, C.TAG_STUDY_IDENTITY: json.dumps(identity, sort_keys=True)}
        with self.conn.errors("creating the study"):
            rid = self.client.create_run(exp, run_name=name, tags=all_tags).info.run_id
            self.client.log_batch(rid, params=as_params(dict(params)))
            self.client.set_terminated(rid, status="FINISHED")
        from trainkit import settings

        time.sleep(settings.TRAINKIT_CLAIM_SETTLE.get())  # a racing creator's run becomes visible: then decide
        winner = self.find(name)
        if winner is not None and winner.run_id != rid:
            with contextlib.suppress(Exception):
                self.client.delete_run(rid)
            return winner
        return StudyRecord(rid, name, dict(identity))

    def _require_edit(self, name: str) -> None:
        """A search writes in every experiment trainkit uses (study and trials; the trials'
        walk-forwards train, backtest and log): EDIT on each, asked before the first write."""
        self.conn.require("EDIT", [C.TUNE_EXPERIMENT, self.store.experiment_name, C.BACKTEST_EXPERIMENT,
                                   C.WALKFORWARD_EXPERIMENT], f"study {name}: running trials")

    def trials(self, study: StudyRecord) -> list[TrialRecord]:
        """Every trial of ``study``, by number (all pages)."""
        exp = self._experiment(create=False)
        if exp is None:
            return []
        runs = self.conn.search([exp], f"tags.`{C.TAG_PARENT_RUN}` = {C.quote(study.run_id)}")
        now = time.time()
        out = [_trial(r, now) for r in runs if C.TAG_TRIAL_NUMBER in r.data.tags]
        return sorted(out, key=lambda t: (t.number, t.start_time))

    def configs_tried(self, window_key: str) -> set[str]:
        """The distinct configs (``trainkit.config_key``) of every complete or pruned trial on
        one selection window (``trainkit.window_key``), whichever study ran them: a pruned trial
        logs no walk-forward, yet it was a try. Reads only."""
        exp = self._experiment(create=False)
        if exp is None:
            return set()
        runs = self.conn.search([exp], f"tags.`{C.TAG_WINDOW_KEY}` = {C.quote(window_key)}")
        return {r.data.tags[C.TAG_CONFIG_KEY] for r in runs
                if r.data.tags.get(C.TAG_CONFIG_KEY) and r.data.tags.get(C.TAG_TRIAL_STATE) in C.COUNTED_TRIAL_STATES}

    # ---- the study's lease: trial numbers are given out under it
    @contextlib.contextmanager
    def claiming(self, study: StudyRecord) -> Iterator[None]:
        """Hold the study's lease for the body: one claimant at a time reads the trials and
        creates the next ones, on any machine (the lease protocol of :mod:`trainkit.store.lease`,
        in the tune experiment)."""
        from trainkit.store.lease import LeaseManager

        self._require_edit(study.name)
        exp = self._experiment()
        leases = LeaseManager(self.conn, lambda: exp)
        key = f"study:{study.run_id}"

        def create_run() -> tuple[str, int, bool]:
            run = self.client.create_run(exp, run_name=f"{study.name}-lease", tags={
                C.TAG_CLAIM: key, C.TAG_HEARTBEAT: f"{time.time():.3f}", C.TAG_STUDY: study.name})
            return run.info.run_id, run.info.start_time, False

        while True:
            with self.conn.errors("claiming the study"):
                lease = leases.acquire(key, create_run, label=f"study {study.name}")
            if lease is not None:
                break
            leases.wait(key, poll_seconds=0.5, label=f"study {study.name}")
        try:
            yield
        finally:
            lease.release("trial numbers given out")

    def _start(self, study: StudyRecord, run_id: str, number: int) -> Lease:
        key = f"trial:{study.run_id}:{number}"
        self.client.set_tag(run_id, C.TAG_CLAIM, key)
        return Lease(self.client, self.conn.tracking_uri, run_id, key)

    def start_trial(self, study: StudyRecord, number: int, params: Mapping[str, Any], *, hp_params: Mapping[str, str],
                    config_key: str, window_key: str) -> TrialRun:
        """A new trial ``number`` (call under :meth:`claiming`): its run, RUNNING, beating."""
        from trainkit.store.runs import as_params

        exp = self._experiment()
        tags = {
            C.TAG_PARENT_RUN: study.run_id, C.TAG_STUDY: study.name, C.TAG_TRIAL_NUMBER: str(number),
            C.TAG_TRIAL_STATE: "running", C.TAG_TRIAL_PARAMS: json.dumps(dict(params), sort_keys=True),
            C.TAG_TRIAL_ATTEMPTS: "1", C.TAG_CONFIG_KEY: config_key, C.TAG_WINDOW_KEY: window_key,
            C.TAG_HEARTBEAT: f"{time.time():.3f}", C.TAG_SYMBOL: str(study.identity.get("symbol", "")),
        }
        with self.conn.errors("creating a trial"):
            rid = self.client.create_run(exp, run_name=f"{study.name}-trial{number:03d}", tags=tags).info.run_id
            self.client.log_batch(rid, params=as_params(dict(hp_params)))
            lease = self._start(study, rid, number)
        record = TrialRecord(rid, number, "running", dict(params), config_key=config_key, live=True)
        return TrialRun(self, record, lease)

    def restart_trial(self, study: StudyRecord, trial: TrialRecord) -> TrialRun:
        """Take a failed or interrupted trial up again, in place (call under :meth:`claiming`):
        same number, same values, so a resumed study asks what an uninterrupted one would."""
        with self.conn.errors("restarting a trial"):
            run = self.client.get_run(trial.run_id)
            attempts = int(run.data.tags.get(C.TAG_TRIAL_ATTEMPTS, "1")) + 1
            self.client.update_run(trial.run_id, status="RUNNING")
            self.client.log_batch(trial.run_id, tags=_tags({
                C.TAG_TRIAL_STATE: "running", C.TAG_TRIAL_ATTEMPTS: str(attempts), C.TAG_HEARTBEAT: f"{time.time():.3f}"}))
            lease = self._start(study, trial.run_id, trial.number)
        return TrialRun(self, TrialRecord(trial.run_id, trial.number, "running", trial.params, running=trial.running,
                                          config_key=trial.config_key, live=True), lease)

    # ---- the study's summary
    def summarize(self, study: StudyRecord, *, params: Mapping[str, str], metrics: Mapping[str, float],
                  tags: Mapping[str, str], artifacts: Mapping[str, str]) -> None:
        """The best trial and the counts on the study run (latest values win), and pictures."""
        from trainkit.store.runs import as_metrics

        best = {f"best.{k}": v for k, v in params.items()}  # params are write-once in MLflow: the best moves, so tags
        with self.conn.errors("summarising the study"):
            self.client.log_batch(study.run_id, metrics=as_metrics(dict(metrics)), tags=_tags({**tags, **best}))
            for path in artifacts.values():
                self.client.log_artifact(study.run_id, path)

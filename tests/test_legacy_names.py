"""The legacy-name convention (docs/ARCHITECTURE.md, *The MLflow contract*): renaming a tag
keeps old stores answering. Shown on a real sqlite store: a model is trained, its run is
rewritten the way an older trainkit would have written it (the tags under their old names),
and the cache, ``list`` and ``explain`` still find it once the old names are recorded in
``contract.LEGACY_TAGS`` — and do not without them, so the convention is what does it."""

from __future__ import annotations

from pathlib import Path

import pytest

from support import FAST, copy_sqlite_store

WINDOW = ("LEGC", "2020-01-01", "2021-06-30")
#: a pretend history: the hash and the symbol tags had other names in an older trainkit
OLD_NAMES = {"config_hash": "trainkit.config_hash_v0", "trainkit.symbol": "trainkit.ticker"}


@pytest.fixture
def old_store(tmp_path: Path, sqlite_template: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TRAINKIT_CACHE_DIR", str(tmp_path / "cache"))
    uri = copy_sqlite_store(sqlite_template, tmp_path)
    from trainkit import TrainingManager

    manager = TrainingManager(uri)
    res = manager.get(*WINDOW, data_source="synthetic", progress=False, **FAST)
    client = manager.store.client
    tags = client.get_run(res.run_id).data.tags
    for new, old in OLD_NAMES.items():  # rewrite the run as an older trainkit wrote it
        client.set_tag(res.run_id, old, tags[new])
        client.delete_tag(res.run_id, new)
    return uri, res


def test_a_renamed_tag_keeps_an_old_store_answering(old_store, monkeypatch: pytest.MonkeyPatch) -> None:
    from trainkit import TrainingManager
    from trainkit.store import contract as C

    uri, res = old_store
    assert TrainingManager(uri).lookup(res.config) is None  # without the convention: the old model is lost

    monkeypatch.setattr(C, "LEGACY_TAGS", {new: (old,) for new, old in OLD_NAMES.items()})
    manager = TrainingManager(uri)
    found = manager.lookup(res.config)
    assert found is not None and found.run_id == res.run_id and found.symbol == "LEGC"
    again = manager.get(*WINDOW, data_source="synthetic", progress=False, **FAST)
    assert again.cache_hit and again.run_id == res.run_id  # served, not retrained
    assert [m.run_id for m in manager.list_cached_models("LEGC")] == [res.run_id]
    assert manager.explain(res.config).answer.run_id == res.run_id


def test_current_tags_prefers_the_current_name(monkeypatch: pytest.MonkeyPatch) -> None:
    from trainkit.store import contract as C

    monkeypatch.setattr(C, "LEGACY_TAGS", {"trainkit.symbol": ("trainkit.ticker", "ticker")})
    assert C.tag_spellings("trainkit.symbol") == ("trainkit.symbol", "trainkit.ticker", "ticker")
    assert C.current_tags({"ticker": "A"})["trainkit.symbol"] == "A"
    assert C.current_tags({"ticker": "A", "trainkit.ticker": "B"})["trainkit.symbol"] == "B"  # newest old name first
    assert C.current_tags({"trainkit.symbol": "C", "ticker": "A"})["trainkit.symbol"] == "C"
    assert C.tag_spellings("config_hash") == ("config_hash",)

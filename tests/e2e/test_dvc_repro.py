"""`dvc repro` runs the whole pipeline on tiny data, then finds nothing to do; moving a
registry alias (promote, rollback) makes exactly the stages that read it stale, under
`dvc status` and in the flow's cache keys (DVC's fingerprints), and nothing else: ingest only
when the production version's split ledger differs. A new data version keeps every split of
the production model's ledger though nobody recorded it in git (the nightly case)."""

from __future__ import annotations

import contextlib
import csv
import json
import shutil
import sys
from pathlib import Path

import pytest

from flows.bridge import stages
from flows.bridge.overrides import apply_overrides
from tasks.common.config import IngestConfig, load
from tasks.demo import synth
from tasks.ingest import run as ingest
from tasks.registry import client as registry
from tasks.splits import ledger

from .conftest import run

STAGES = ["resolve_production", "ingest", "augment", "train_frozen", "train_full", "evaluate", "publish"]
ALWAYS = {"resolve_production": ["always changed"]}
pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def reproduced(first_repro):
    repo, out, _ = first_repro  # tests/e2e/conftest.py
    return repo, out


def test_every_stage_runs_once_in_dag_order(reproduced):
    _, out = reproduced
    ran = [line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")]
    assert ran == STAGES


def test_stages_leave_their_outputs(reproduced):
    repo, _ = reproduced
    for path in ("artifacts/dataset/manifest.csv", "artifacts/shards/index.json", "artifacts/shards/preview.png",
                 "artifacts/models/frozen/model.keras", "artifacts/models/full/model.keras",
                 "artifacts/models/full/metadata.json", "artifacts/eval/metrics.json",
                 "artifacts/publish/receipt.json"):
        assert (repo / path).is_file(), path
    assert not list((repo / "data").glob("*.csv")), "a stage wrote under data/"


def ran(out: str) -> list[str]:
    return [line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")]


def test_second_repro_runs_nothing_but_the_checks_its_own_publish_asks_for(reproduced):
    repo, _ = reproduced
    receipt = json.loads((repo / "artifacts/publish/receipt.json").read_text())
    published = repo / "registry/tagsmith" / receipt["version"] / "splits.tsv"
    assert published.read_text() == (repo / "artifacts/splits/ledger.tsv").read_text()  # the model's ledger
    dataset = {p.name: p.read_bytes() for p in (repo / "artifacts/dataset").iterdir()}
    # The first run's publish moved the production alias, which publish reads, to a model with
    # a ledger, which ingest reads: one re-check each; ingest keeps the same splits (the
    # ledger is the one it wrote) and publish finds the candidate already in production.
    again = run([sys.executable, "-m", "dvc", "repro"], repo).stdout
    assert ran(again) == ["resolve_production", "ingest", "publish"]
    assert {p.name: p.read_bytes() for p in (repo / "artifacts/dataset").iterdir()} == dataset
    assert json.loads((repo / "artifacts/publish/receipt.json").read_text())["outcome"] == "unchanged"
    third = run([sys.executable, "-m", "dvc", "repro"], repo).stdout
    assert ran(third) == ["resolve_production"]  # asks the registry; nothing else runs
    status = run([sys.executable, "-m", "dvc", "status", "--json"], repo).stdout
    assert json.loads(status) == ALWAYS


def test_metrics_are_dvc_metrics(reproduced):
    repo, _ = reproduced
    shown = json.loads(run([sys.executable, "-m", "dvc", "metrics", "show", "--json"], repo).stdout)
    metrics = next(iter(shown.values()))["data"]["artifacts/eval/metrics.json"]["data"]
    assert {"p_at_1", "map"} <= set(metrics)
    assert 0.0 <= metrics["map"] <= 1.0


def test_dag_is_the_documented_chain(reproduced):
    repo, _ = reproduced
    dag = run([sys.executable, "-m", "dvc", "dag", "--dot"], repo).stdout
    chain = STAGES[1:]
    for a, b in zip(chain, chain[1:]):
        assert f'"{a}" -> "{b}"' in dag, (a, b, dag)
    for reader in ("ingest", "train_frozen", "publish"):
        assert f'"resolve_production" -> "{reader}"' in dag, dag


# --- the registry as an input ---------------------------------------------------------------


def dvc(repo: Path, *args: str) -> str:
    return run([sys.executable, "-m", "dvc", *args], repo).stdout


def stale_after_resolving(repo: Path) -> set[str]:
    """Ask the registry (what every run does first), then what `dvc status` calls stale."""
    dvc(repo, "repro", "--single-item", "resolve_production")
    return set(json.loads(dvc(repo, "status", "--json"))) - set(ALWAYS)


def fingerprints(repo: Path) -> dict[str, str]:
    """The flow's cache key of every stage (DVC's run-cache key, flows/bridge/stages.py),
    computed from the workspace as the flow does (it runs there)."""
    with contextlib.chdir(repo):
        return {name: stages.fingerprint(repo, name) for name in STAGES}


def settle(repo: Path) -> None:
    """`dvc repro` until a run runs nothing but resolve_production (a publish moves the alias
    publish reads, so the run after it re-checks once)."""
    for _ in range(4):
        if ran(dvc(repo, "repro")) == ["resolve_production"]:
            return
    raise AssertionError("the pipeline did not settle")


def copy_version(repo: Path, version: str, tag: str, splits: dict[str, ledger.Entry] | None = None) -> str:
    """Publish a second version holding the same model (metadata tagged): loadable, comparable;
    with the same split ledger, or ``splits``."""
    store = registry.open_store(str(repo / "registry"))
    src, dest = repo / "registry" / "tagsmith" / version, repo.parent / f"copy-{tag}"
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("MANIFEST.json"))
    meta = json.loads((dest / "metadata.json").read_text())
    (dest / "metadata.json").write_text(json.dumps({**meta, "copy": tag}, sort_keys=True, indent=2) + "\n")
    if splits is not None:
        ledger.write(dest / registry.SPLITS_FILE, splits)
    return registry.publish_version(store, "tagsmith", dest)


def changed(before: dict[str, str], after: dict[str, str]) -> set[str]:
    return {k for k in before if before[k] != after[k]} - set(ALWAYS)


def test_promote_and_rollback_with_the_same_split_ledger_make_exactly_publish_stale(reproduced):
    repo, _ = reproduced
    # must_improve: publishing an equal model is refused, so publish never moves the alias here
    apply_overrides(repo / "params.yaml", {"publish.must_improve": True})
    settle(repo)
    store = registry.open_store(str(repo / "registry"))
    a = registry.get_alias(store, "tagsmith", "production").version
    b = copy_version(repo, a, "b")
    keys = fingerprints(repo)

    registry.promote(store, "tagsmith", b)
    assert stale_after_resolving(repo) == {"publish"}
    moved = fingerprints(repo)
    assert changed(keys, moved) == {"publish"}  # the flow re-runs exactly what dvc calls stale
    dvc(repo, "repro")  # publish compares the candidate with b: equal, refused (must_improve)
    receipt = json.loads((repo / "artifacts/publish/receipt.json").read_text())
    assert receipt["outcome"] == "rejected" and receipt["compared_with"] == b
    assert stale_after_resolving(repo) == set()

    registry.rollback(store, "tagsmith")
    assert stale_after_resolving(repo) == {"publish"}
    assert changed(moved, fingerprints(repo)) == {"publish"}
    assert fingerprints(repo)["publish"] == keys["publish"]  # back to a, back to a's cache key


def test_with_weights_production_moving_its_alias_makes_train_frozen_stale(reproduced):
    repo, _ = reproduced
    store = registry.open_store(str(repo / "registry"))
    a = registry.get_alias(store, "tagsmith", "production").version
    # warm start from an alias of its own, so publish's moves of production leave it alone
    registry.promote(store, "tagsmith", a, alias="warm")
    apply_overrides(repo / "params.yaml", {"train_frozen.weights": "production", "train_frozen.warm_start_alias": "warm"})
    settle(repo)
    meta = json.loads((repo / "artifacts/models/frozen/metadata.json").read_text())
    assert f"@warm={a}" in meta["weights"]  # started from exactly the resolved version
    c = copy_version(repo, a, "c")
    keys = fingerprints(repo)

    registry.promote(store, "tagsmith", c, alias="warm")
    assert stale_after_resolving(repo) == {"train_frozen"}
    assert changed(keys, fingerprints(repo)) == {"train_frozen"}

    # rolled back to the version it trained from: current again, its old cache key back
    registry.rollback(store, "tagsmith", alias="warm")
    assert stale_after_resolving(repo) == set()
    assert fingerprints(repo) == keys


def splits_by_sha(repo: Path, manifest: Path = Path("artifacts/dataset/manifest.csv")) -> dict[str, str]:
    with open(repo / manifest, newline="") as f:
        return {r["sha256"]: r["split"] for r in csv.DictReader(f)}


def test_a_production_model_with_another_split_ledger_makes_ingest_stale_and_keeps_its_splits(reproduced):
    repo, _ = reproduced
    settle(repo)
    store = registry.open_store(str(repo / "registry"))
    a = registry.get_alias(store, "tagsmith", "production").version
    own = ledger.read(repo / "registry/tagsmith" / a / "splits.tsv")
    # a model that trained on one of this data's test images (its ledger says train)
    moved = next(h for h, e in sorted(own.items()) if e.split == "test")
    d = copy_version(repo, a, "d", {**own, moved: ledger.Entry(moved, "train", own[moved].phash, own[moved].path)})
    keys, dataset = fingerprints(repo), (repo / "artifacts/dataset/manifest.csv").read_bytes()

    registry.promote(store, "tagsmith", d)
    assert stale_after_resolving(repo) == {"ingest", "publish"}
    assert changed(keys, fingerprints(repo)) == {"ingest", "publish"}
    dvc(repo, "repro", "--single-item", "ingest")
    assert splits_by_sha(repo)[moved] == "train"  # never scored in the test split d is gated on

    registry.rollback(store, "tagsmith")
    # ingest must redo it; what reads its outputs (augment; publish the ledger) waits for that
    assert stale_after_resolving(repo) == {"ingest", "augment", "publish"}
    dvc(repo, "repro", "--single-item", "ingest")
    assert (repo / "artifacts/dataset/manifest.csv").read_bytes() == dataset
    assert stale_after_resolving(repo) == set() and fingerprints(repo) == keys


def test_a_new_data_version_keeps_the_production_models_splits_without_a_git_ledger(reproduced, tmp_path):
    repo, _ = reproduced
    store = registry.open_store(str(repo / "registry"))
    prod = registry.get_alias(store, "tagsmith", "production").version
    trained = {h: e.split for h, e in ledger.read(repo / "registry/tagsmith" / prod / "splits.tsv").items()}
    synth.generate(repo / "data", preset="tiny", slice="v2", workers=1)  # new labelled images, no commit
    dvc(repo, "add", "-q", "data")
    dvc(repo, "repro", "ingest")

    now = splits_by_sha(repo)
    assert len(now) > len(trained) and set(trained) <= set(now)
    assert {h: now[h] for h in trained} == trained  # no image the production model saw moved
    assert not ledger.read(repo / "data.splits.tsv"), "nobody recorded a ledger in git"
    summary = json.loads((repo / "artifacts/splits/summary.json").read_text())
    assert summary["from_production"] == len(trained) and summary["from_git"] == 0
    # the point of it: assigned afresh (no ledger at all), some of those images would move
    cfg = load(IngestConfig, repo / "params.yaml").model_copy(update={"root": str(repo / "data"), "splits_ledger": None, "workers": 1})
    ingest(cfg, tmp_path / "dataset", tmp_path / "splits", production_ledger=None)
    fresh = splits_by_sha(tmp_path, Path("dataset/manifest.csv"))
    assert any(fresh[h] != s for h, s in trained.items())

"""Three nights of the recurring loop against a local S3 endpoint (``make demo-nightly``).

    python -m flows.demo_nightly [--preset demo|tiny] [--workdir DIR] [--set section.key=value ...]

Needs ``AWS_ENDPOINT_URL`` (``infra/s3-local.sh up``; ``eval "$(infra/s3-local.sh env)"``). In a
fresh repository under ``--workdir`` that follows a sliced source on S3 (``tagsmith data
track``), with its registry on S3 too:

- night 1: the first slice is the data; the run trains from scratch and publishes v1;
- night 2: nothing new: every stage Cached but two re-checks, as production moved in night 1:
  publish finds the same model ("unchanged") and ingest the same splits (v1's ledger is the
  one it wrote); nothing is published;
- night 3: after ``tagsmith data add`` of a second slice, the run imports it, re-runs the
  stages that depend on the data, warm-started from production, and the gate decides. The
  first slice's images keep the splits v1 was trained with (v1's ``splits.tsv``), though no
  one committed a split ledger.

Each night is a real run of the ``retrain`` flow (a temporary Prefect server), recorded as a
DVC experiment whose ref the published version's lineage names; the end prints the registry's
lineage, and ``<workdir>/nights.json`` what each night did. Nothing here touches the checkout it is
run from.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parents[1]
COPIED = ("dvc.yaml", "params.yaml", ".dvcignore", ".gitignore", "tasks", "flows")
# What the run after a publish re-checks against the new production model (same outputs)
RECHECKS = {"ingest", "publish"}
GIT = ["git", "-c", "user.name=tagsmith-demo", "-c", "user.email=demo@localhost"]


def _sh(cmd: list[str], cwd: Path) -> None:
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} failed:\n{(out.stderr or out.stdout)[-2000:]}")


def make_batches(root: Path, preset: str) -> tuple[Path, list[tuple[Path, Path]]]:
    """The embedded generator's v2 data as two batches of labelled images, the way a labeller
    delivers them (a folder + ``name<TAB>class,class``): v1's images, then the ones v2 adds."""
    from tasks.demo import synth

    gen = root / "generated"
    summary = synth.generate(gen, preset=preset, slice="v2", workers=os.cpu_count() or 1)
    classes = (gen / "classes.txt").read_text().split()
    rows = [line.split("\t") for line in (gen / "labels.tsv").read_text().splitlines()[1:]]
    first = summary["images"] - summary["new"]
    batches = []
    for n, part in enumerate((rows[:first], rows[first:]), start=1):
        folder = root / f"batch{n}"
        (folder / "images").mkdir(parents=True)
        for name, _ in part:
            shutil.copy2(gen / "images" / name, folder / "images" / name)
        (folder / "labels.tsv").write_text(
            "".join(f"{name}\t{','.join(classes[int(i)] for i in labels.split(','))}\n" for name, labels in part))
        batches.append((folder / "images", folder / "labels.tsv"))
    return gen / "classes.txt", batches


def make_repo(repo: Path, source: str, registry: str, overrides: dict[str, Any]) -> None:
    """A git+dvc repository of this project's pipeline that follows ``source``."""
    from flows.bridge.overrides import apply_overrides
    from tasks.datasource import tracking
    from tasks.splits import ledger

    repo.mkdir(parents=True)
    for name in COPIED:
        src = PROJECT / name
        (shutil.copytree(src, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
         if src.is_dir() else shutil.copy2(src, repo / name))
    _sh(["git", "init", "-q"], repo)
    _sh([sys.executable, "-m", "dvc", "init", "-q"], repo)
    _sh([sys.executable, "-m", "dvc", "config", "core.analytics", "false"], repo)
    ledger.write(repo / "data.splits.tsv", {})  # new data: no split recorded yet
    tracking.track(repo, source, log=lambda _: None)
    apply_overrides(repo / "params.yaml", {"ingest.source": "sliced", "ingest.root": "data", "ingest.test_list": None,
                                           "registry.store": registry, **overrides})
    _sh(GIT + ["add", "-A"], repo)
    _sh(GIT + ["commit", "-qm", f"follow {source}"], repo)


def night(n: int, repo: Path, **params: Any) -> dict[str, Any]:
    """One nightly run of the retrain flow; prints and returns what it did."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from flows.retrain import STAGES, retrain

    print(f"\n===== night {n} =====", flush=True)
    state = retrain(workspace=str(repo), experiment=f"night-{n}", return_state=True, **params)
    summary = state.result()
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
    states = {t.name: t.state.name for t in runs if t.name in STAGES}
    receipt = summary["publish"]
    ran = [s for s in STAGES if states.get(s) == "Completed" and s != "resolve_production"]
    print(f"\n----- night {n} summary -----")
    print("stages: " + ", ".join(f"{s} {states.get(s, '?')}" for s in STAGES))
    if not ran or set(ran) <= RECHECKS and receipt.get("outcome") == "unchanged":
        print("nothing new (no new data, no new code): every stage Cached; nothing published"
              + (f" ({' and '.join(ran)} re-checked against the production model)" if ran else ""))
    else:
        print(f"ran: {', '.join(ran)}")
    print(f"publish: {receipt.get('outcome')} {receipt.get('version')}"
          + (f" (compared with {receipt.get('compared_with')})" if receipt.get("compared_with") else "")
          + (f"; failing checks: {', '.join(receipt['gate']['failed'])}" if receipt.get("gate", {}).get("failed") else ""))
    return {"states": states, "receipt": receipt}


def main(argv: list[str] | None = None) -> int:
    from flows.bridge.overrides import parse_assignments
    from tasks.datasource.slices import add_slice
    from tasks.datasource.store import open_source
    from tasks.registry import lineage
    from tasks.registry.client import open_store
    from tasks.common.files import write_json

    p = argparse.ArgumentParser(prog="demo-nightly", description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="demo", choices=["tiny", "demo"], help="embedded dataset size")
    p.add_argument("--workdir", default=".tagsmith/demo-nightly", help="replaced on every run")
    p.add_argument("--bucket", default=os.environ.get("TAGSMITH_S3_BUCKET", "tagsmith"))
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="params.yaml values for every night")
    args = p.parse_args(argv)
    if not os.environ.get("AWS_ENDPOINT_URL"):
        raise SystemExit("demo-nightly: AWS_ENDPOINT_URL is not set (infra/s3-local.sh up; eval \"$(infra/s3-local.sh env)\")")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    work = Path(args.workdir).resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    # the stage caches start empty too: an earlier demo's would make night 1 "Cached"
    os.environ["PREFECT_LOCAL_STORAGE_PATH"] = str(work / "prefect-results")
    prefix = f"s3://{args.bucket}/demo-nightly/{uuid.uuid4().hex[:8]}"  # each demo starts empty
    source, registry = f"{prefix}/dataset", f"{prefix}/registry"
    classes, ((images1, labels1), (images2, labels2)) = make_batches(work, args.preset)

    print(f"tagsmith data add {images1} --labels {labels1} --source {source}")
    add_slice(open_source(source), images1, labels1, classes_file=classes)
    repo = work / "repo"
    make_repo(repo, source, registry, parse_assignments(args.set or []))
    print(f"repository {repo} follows {source}; registry {registry}")

    first = night(1, repo, weights="none")  # nothing in production yet: from scratch
    second = night(2, repo, weights="none")
    print(f"\ntagsmith data add {images2} --labels {labels2} --source {source}")
    add_slice(open_source(source), images2, labels2)
    third = night(3, repo, weights="production")  # the nightly default once production exists
    write_json(work / "nights.json", {"registry": registry, "source": source, "nights": [first, second, third]})

    store = open_store(registry)
    chain = lineage.walk(store, "tagsmith", third["receipt"]["version"]) if third["receipt"].get("published") else []
    print("\n===== lineage (tagsmith registry lineage) =====")
    for entry in chain or lineage.walk(store, "tagsmith", second["receipt"]["version"]):
        print(f"{entry['version']}  parent={entry.get('parent')}  ref={entry.get('ref')}  "
              f"flow run={(entry.get('flow_run') or {}).get('name')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

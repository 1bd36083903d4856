"""The ``tagsmith`` command: the user's entry points.

    tagsmith data [--preset demo|tiny|study] [--slice v1|v2]   # (re)generate the embedded dataset
    tagsmith data add FOLDER --labels FILE --source URI [--slice ID] [--classes FILE]  # a new immutable slice
    tagsmith data track URI | tagsmith data update               # follow a sliced source with DVC
    tagsmith retrain [--backbone B] [--epochs-full N] [--set section.key=value ...] [--experiment NAME]
    tagsmith retrain --recipe efficientnet_lite0-imagenet    # a named set of options (make demo-imagenet)
    tagsmith predict --model production images/ -o preds.csv
    tagsmith registry list | show VERSION | promote VERSION [--alias A] | rollback [--alias A] | verify VERSION
    tagsmith registry lineage VERSION | reproduce VERSION [--into DIR] [--repository URL]
    tagsmith status                                            # each stage's fingerprint, current or stale
    tagsmith splits record | init                              # keep the splits ingest assigned (data.splits.tsv)
    tagsmith results-store s3://BUCKET/PREFIX [--endpoint-url URL]  # share Prefect's stage caches on S3

Heavy imports (Prefect, TensorFlow) happen inside the subcommand that needs them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any, get_args

from flows.bridge.recipes import RECIPES
from tasks.common import paths
from tasks.common.config import BackboneName, LossName, ResizeMode, WeightsKind
from tasks.common.errors import stage_main
from tasks.common.noise import quiet_stderr


def _plain(obj: Any) -> Any:
    """JSON fallback: dataclasses as their fields, anything else as text."""
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else str(obj)


def _cmd_data(args: argparse.Namespace) -> int:
    from tasks.demo import synth

    summary = synth.generate(Path(args.out), preset=args.preset, slice=args.slice, seed=args.seed, workers=args.workers)
    print(json.dumps({k: v for k, v in summary.items() if not isinstance(v, dict)}, indent=2))
    return 0


def _cmd_data_add(args: argparse.Namespace) -> int:
    from flows.data_events import emit_slice_added
    from tasks.datasource.store import open_source
    from tasks.datasource.slices import add_slice

    report = add_slice(open_source(args.source), Path(args.folder), Path(args.labels), slice_id=args.slice_id,
                       classes_file=Path(args.classes) if args.classes else None, dry_run=args.dry_run)
    print(json.dumps(dataclasses.asdict(report), indent=2))
    if args.dry_run:
        print("dry run: nothing written", file=sys.stderr)
    elif (event := emit_slice_added(report)) is not None:
        print(f"emitted event tagsmith.data.slice-added ({event}) to {os.environ['PREFECT_API_URL']}", file=sys.stderr)
    else:
        print("no event emitted (PREFECT_API_URL not set): the next scheduled run picks the slice up", file=sys.stderr)
    return 0


def _cmd_data_track(args: argparse.Namespace) -> int:
    from flows.bridge.overrides import apply_overrides
    from tasks.datasource import tracking

    root = Path(args.workspace)
    imported = tracking.track(root, args.source, replace=args.replace)
    # ingest reads the imported layout (classes.txt + every slice's labels.tsv); test is carved,
    # as a sliced source brings no test list
    apply_overrides(root / "params.yaml", {"ingest.source": "sliced", "ingest.root": "data", "ingest.test_list": None})
    print(f"following {args.source}: {len(imported)} slice(s) imported; ingest.source=sliced in params.yaml")
    print("commit it:  git add .gitignore params.yaml data/.gitignore data/classes.txt.dvc data/slices && git commit")
    return 0


def _cmd_data_update(args: argparse.Namespace) -> int:
    from tasks.datasource import tracking

    tracking.update(Path(args.workspace))
    return 0


def retrain_arguments(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """The retrain flow's parameters and params.yaml overrides from ``tagsmith retrain``'s options.

    A ``--recipe`` gives the defaults; every option given explicitly (and ``--set``) wins over it.
    """
    from flows.bridge.overrides import parse_assignments
    from flows.bridge.recipes import recipe

    base = recipe(args.recipe) if args.recipe else {"params": {}}
    overrides = {**base.pop("params"), **parse_assignments(args.set or [])}
    chosen = {k: getattr(args, k) if getattr(args, k) is not None else base.get(k)
              for k in ("backbone", "weights", "image_size", "resize", "epochs_frozen",
                        "epochs_full", "lr_frozen", "lr_full", "loss")}
    if chosen["weights"] not in (None, *get_args(WeightsKind)):  # a weights file
        overrides["train_frozen.weights"] = chosen.pop("weights")
    return chosen, overrides


def _cmd_retrain(args: argparse.Namespace) -> int:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from flows.bridge.report import render_text
    from flows.retrain import main as retrain

    chosen, overrides = retrain_arguments(args)
    summary = retrain(**chosen, force_publish=True if args.force_publish else None,
                      refresh_cache=args.refresh_cache, experiment=args.experiment, params=overrides,
                      workspace=args.workspace)
    print(render_text(summary))
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from flows.bridge import stages

    root = Path(args.workspace).resolve()
    names = stages.pipeline(root)
    if args.refresh:  # the registry is outside the workspace: ask it whether an alias moved
        for name in names:
            if stages.fingerprint(root, name) == stages.ALWAYS:
                stages.repro(root, name, log=lambda line: None)
                print(f"{name:13s} {'(re-resolved)':16s}  runs on every repro")
    for name in names:
        if args.refresh and stages.fingerprint(root, name) == stages.ALWAYS:
            continue
        try:
            key, current = stages.inspect(root, name)
            print(f"{name:13s} {key[:16]}  {'current' if current else 'stale'}")
        except stages.StageError as e:
            print(f"{name:13s} {'-':16s}  waiting ({e})")
    return 0


def _cmd_splits(args: argparse.Namespace) -> int:
    from tasks.common.config import IngestConfig, load
    from tasks.splits import ledger

    root = Path(args.workspace).resolve()
    cfg = load(IngestConfig, root / "params.yaml")
    if not cfg.splits_ledger:
        sys.exit("tagsmith splits: params.yaml sets no ingest.splits_ledger")
    target = root / cfg.splits_ledger
    if args.action == "init":
        if target.exists():
            sys.exit(f"tagsmith splits init: {target} exists; it is the record of every split given so far")
        ledger.write(target, {})
        print(f"wrote an empty split ledger {target}; commit it")
        return 0
    from flows.bridge import stages

    if not stages.is_current(root, "ingest"):
        sys.exit("tagsmith splits record: ingest is not up to date with the data, the ledger or params; "
                 "run `dvc repro ingest` first, then record what it assigned")
    proposed = ledger.read(root / args.source)
    old = ledger.read(target)
    # ingest gives an image production trained or validated on production's split (ledger.merge)
    production = root / paths.PRODUCTION_LEDGER
    prod = ledger.read(production) if production.is_file() else {}
    moved = [h for h in ledger.moved(old, proposed)
             if h not in proposed or h not in prod or prod[h].split != proposed[h].split]
    if moved:  # ingest never does this; the ledger was edited or swapped since it ran
        sys.exit(f"tagsmith splits record: {len(moved)} recorded images would change split or vanish "
                 f"(first: {moved[:3]}); refusing to rewrite {target}")
    ledger.write(target, proposed)
    added = [e for h, e in proposed.items() if h not in old]
    by_split = {s: sum(e.split == s for e in added) for s in ledger.SPLITS}
    print(json.dumps({"ledger": str(target), "recorded_before": len(old), "added": len(added),
                      "added_by_split": by_split}, indent=2))
    if added:
        print(f"commit {cfg.splits_ledger} with data.dvc: git add data.dvc {cfg.splits_ledger}", file=sys.stderr)
    return 0


def _cmd_results_store(args: argparse.Namespace) -> int:
    from flows.deployment import results

    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    slug = results.save_block(args.uri, endpoint_url=args.endpoint_url, name=args.name)
    os.environ[results.SETTING] = slug
    results.check()  # the block as a run will load it from the server works too
    print(f"saved block {slug}; give every worker (or the pool's env job variable):")
    print(f"export {results.SETTING}={slug}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from tasks.serving.predict import predict

    summary = predict(args.model, [Path(p) for p in args.inputs], Path(args.output),
                      batch_size=args.batch_size, store=args.store, model_name=args.model_name)
    print(json.dumps(summary, indent=2, default=_plain))
    return 0


def _cmd_registry(args: argparse.Namespace) -> int:
    from tasks.registry import client as registry

    store = registry.open_store(args.store)
    name = args.model_name
    result: Any
    if args.action == "list":
        result = registry.list_versions(store, name)
    elif args.action == "show":
        result = registry.show(store, name, args.version)
    elif args.action == "promote":
        result = registry.promote(store, name, args.version, args.alias)
    elif args.action == "rollback":
        result = registry.rollback(store, name, args.alias)
    elif args.action in ("lineage", "reproduce"):
        return _cmd_lineage(args, store, registry.resolve(store, name, args.version))
    else:  # verify
        version = registry.resolve(store, name, args.version)  # an alias or a version
        problems = registry.verify(store, name, version)
        print(json.dumps({"version": version, "problems": problems}, indent=2, default=_plain))
        return 1 if problems else 0
    print(json.dumps(result, indent=2, default=_plain))
    return 0


def _cmd_lineage(args: argparse.Namespace, store: Any, version: str) -> int:
    import tempfile

    from tasks.registry import client as registry
    from tasks.registry import lineage

    if args.action == "lineage":
        print(json.dumps(lineage.walk(store, args.model_name, version), indent=2))
        return 0
    record = lineage.read(store, args.model_name, version)
    if record is None:
        sys.exit(f"tagsmith registry reproduce: {version} has no lineage.json (published before lineage was recorded)")
    into = Path(args.into or tempfile.mkdtemp(prefix=f"tagsmith-reproduce-{version}-"))
    rebuilt = lineage.reproduce(record, args.store, into, repository=args.repository,
                                log=lambda line: print(line, file=sys.stderr))  # stdout: the JSON result
    published = registry.resolve_model_dir(args.store, args.model_name, version, paths.REGISTRY_CACHE)
    same = lineage.same_weights(rebuilt, published)
    print(json.dumps({"version": version, "ref": record["ref"], "rebuilt": str(rebuilt), **same}, indent=2))
    return 0 if same["weights_equal"] else 1


def _publish_defaults() -> tuple[str, str]:
    """The registry of ./params.yaml; plain defaults only where there is no params.yaml
    (a broken one is an error, never silently replaced by defaults)."""
    from tasks.common.config import PARAMS_FILE, RegistryConfig, load

    if not PARAMS_FILE.exists():
        return "registry", "tagsmith"
    cfg = load(RegistryConfig)
    return cfg.store, cfg.model_name


def build_parser() -> argparse.ArgumentParser:
    store, model_name = _publish_defaults()
    p = argparse.ArgumentParser(prog="tagsmith", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("data", help="generate the embedded synthetic dataset into data/")
    d.add_argument("--preset", default="demo", choices=["tiny", "demo", "study"],
                   help="tiny: 80 images (tests); demo: 3,000 (make demo); study: the study's 47,441 at 256 px")
    d.add_argument("--slice", default="v1", choices=["v1", "v2"], help="v2 adds 1,500 new images to v1")
    d.add_argument("--seed", type=int, default=0, help="same seed, same bytes")
    d.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="drawing processes")
    d.add_argument("--out", default="data", help="output folder (default: data)")
    d.set_defaults(func=_cmd_data)
    dsub = d.add_subparsers(dest="data_action", metavar="{add,track,update}",
                            help="add a slice to a sliced source, or follow one with DVC (none: generate the embedded dataset)")
    da = dsub.add_parser("add", help="append labelled images to a sliced source as a new immutable slice",
                         description="Validate everything first (labels, images, name clashes), then write "
                                     "the slice's images and labels.tsv, and its MANIFEST.json last.")
    da.add_argument("folder", help="folder of the new images (flat)")
    da.add_argument("--labels", required=True, help="name<TAB>labels file (labels by class name)")
    da.add_argument("--source", default=os.environ.get("TAGSMITH_DATA_SOURCE"), required="TAGSMITH_DATA_SOURCE" not in os.environ,
                    help="the source: a folder or s3://bucket/prefix (default: $TAGSMITH_DATA_SOURCE)")
    da.add_argument("--slice", dest="slice_id", metavar="ID", help="slice id (default: s<NNNN>, the next number)")
    da.add_argument("--classes", metavar="FILE", help="the full class list, when the slice brings new classes "
                                                     "(must extend the source's classes.txt; required for the first slice)")
    da.add_argument("--dry-run", action="store_true", help="validate and report; write nothing")
    da.set_defaults(func=_cmd_data_add)
    dt = dsub.add_parser("track", help="follow a sliced source with DVC: one dvc import-url per slice")
    dt.add_argument("source", help="the source: a folder or s3://bucket/prefix")
    dt.add_argument("--replace", action="store_true", help="stop versioning data/ with data.dvc and replace it")
    dt.add_argument("--workspace", default=".", help="the repository checkout (default: .)")
    dt.set_defaults(func=_cmd_data_track)
    du = dsub.add_parser("update", help="import the source's new slices and classes.txt (old slices are never re-fetched)")
    du.add_argument("--workspace", default=".", help="the repository checkout (default: .)")
    du.set_defaults(func=_cmd_data_update)

    r = sub.add_parser("retrain", help="run the retraining flow (every dvc.yaml stage as a cached Prefect task)",
                       description="Run the retraining flow. Each option is written into params.yaml for "
                                   "this run (the key in brackets); unset options keep params.yaml's value.")
    r.add_argument("--recipe", choices=sorted(RECIPES),
                   help="a named set of the options below (flows/bridge/recipes.py); options given win")
    r.add_argument("--backbone", choices=get_args(BackboneName), help="base network [train_frozen.backbone]")
    r.add_argument("--weights", metavar="{imagenet,none,production,FILE}",
                   help="starting weights of the base: ImageNet, random, the production model, "
                        "or a .keras/.weights.h5 file [train_frozen.weights]")
    r.add_argument("--image-size", type=int, metavar="PX", help="input side in pixels [augment.image_size]")
    r.add_argument("--resize", choices=get_args(ResizeMode),
                   help="stretch to a square or pad to keep the aspect ratio [augment.resize]")
    r.add_argument("--epochs-frozen", type=int, metavar="N", help="head-only epochs [train_frozen.epochs]")
    r.add_argument("--epochs-full", type=int, metavar="N",
                   help="fine-tuning epochs; 0 = frozen only [train_full.epochs]")
    r.add_argument("--lr-frozen", type=float, metavar="LR", help="head-only learning rate [train_frozen.learning_rate]")
    r.add_argument("--lr-full", type=float, metavar="LR", help="fine-tuning learning rate [train_full.learning_rate]")
    r.add_argument("--loss", choices=get_args(LossName),
                   help="training loss of both phases [train_frozen.loss, train_full.loss]")
    r.add_argument("--force-publish", action="store_true", help="publish even if the quality gate refuses")
    r.add_argument("--refresh-cache", action="store_true", help="ignore Prefect's cache; DVC decides")
    r.add_argument("--experiment", metavar="NAME", help="also save the run as DVC experiment NAME (dvc exp show)")
    r.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="any params.yaml value")
    r.add_argument("--workspace", default=".", help="the repository checkout to run in (default: .)")
    r.set_defaults(func=_cmd_retrain)

    s = sub.add_parser("status", help="fingerprint of each stage and whether it is current")
    s.add_argument("--workspace", default=".", help="the repository checkout (default: .)")
    s.add_argument("--no-refresh", dest="refresh", action="store_false",
                   help="do not run resolve_production first (then a moved alias shows only after the next run)")
    s.set_defaults(func=_cmd_status)

    sp = sub.add_parser("splits", help="record the splits ingest gave new images (init: an empty ledger)")
    sp.add_argument("action", choices=["record", "init"],
                    help="record: copy the ledger ingest extended over the committed one; init: write an empty one")
    sp.add_argument("--source", default=str(paths.SPLITS / "ledger.tsv"), help="the ledger ingest wrote")
    sp.add_argument("--workspace", default=".", help="the repository checkout (default: .)")
    sp.set_defaults(func=_cmd_splits)

    rs = sub.add_parser("results-store", help="keep Prefect's results (the stage caches) in S3, shared by all workers")
    rs.add_argument("uri", help="s3://BUCKET/PREFIX")
    rs.add_argument("--endpoint-url", help="S3-compatible endpoint (MinIO, moto); default: AWS or $AWS_ENDPOINT_URL")
    rs.add_argument("--name", default="tagsmith-results", help="block name")
    rs.set_defaults(func=_cmd_results_store)

    pr = sub.add_parser("predict", help="label images with a published or local model")
    pr.add_argument("--model", required=True, help="alias, version, model folder or s3:// URI")
    pr.add_argument("inputs", nargs="+", help="images or folders")
    pr.add_argument("-o", "--output", default="predictions.csv", help="CSV of scores and labels")
    pr.add_argument("--batch-size", type=int, default=64, help="images per forward pass")
    pr.add_argument("--store", default=store, help=f"registry: folder or s3:// URI (default from params.yaml: {store})")
    pr.add_argument("--model-name", default=model_name, help=f"model name in the registry (default: {model_name})")
    pr.set_defaults(func=_cmd_predict)

    g = sub.add_parser("registry", help="list, show, promote, roll back, verify, trace or rebuild published versions")
    g.add_argument("action", choices=["list", "show", "promote", "rollback", "verify", "lineage", "reproduce"],
                   help="list versions; show, promote or verify VERSION; roll the alias back to its previous "
                        "version; lineage: VERSION and its parents; reproduce: rebuild VERSION's model from its "
                        "run's git ref in a fresh clone and compare its weights with the published ones")
    g.add_argument("version", nargs="?", help="a version id (v-...) or an alias")
    g.add_argument("--alias", default="production", help="the alias promote and rollback move (default: production)")
    g.add_argument("--store", default=store, help=f"registry: folder or s3:// URI (default from params.yaml: {store})")
    g.add_argument("--model-name", default=model_name, help=f"model name in the registry (default: {model_name})")
    g.add_argument("--into", metavar="DIR", help="reproduce: the fresh folder to clone into (default: a new temporary one)")
    g.add_argument("--repository", metavar="URL", help="reproduce: where the run's ref lives (default: the lineage's)")
    g.set_defaults(func=_cmd_registry)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = stage_main("tagsmith", build_parser)  # reads params.yaml: a broken one is an error
    args = parser.parse_args(argv)
    if getattr(args, "action", None) in ("show", "promote", "verify", "lineage", "reproduce") and not args.version:
        sys.exit(f"tagsmith registry {args.action}: a VERSION is required")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # read when TensorFlow is first imported
    with quiet_stderr():
        return int(stage_main(f"tagsmith {args.command}", lambda: args.func(args)))


if __name__ == "__main__":
    sys.exit(main())

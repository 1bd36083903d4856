"""The ``tagsmith`` command: the user's entry points.

    tagsmith data [--preset demo|tiny|study] [--slice v1|v2]   # (re)generate the embedded dataset
    tagsmith retrain [--backbone B] [--epochs-full N] [--set section.key=value ...] [--experiment NAME]
    tagsmith predict --model production images/ -o preds.csv
    tagsmith registry list | show VERSION | promote VERSION [--alias A] | rollback [--alias A] | verify VERSION
    tagsmith status                                            # each stage's fingerprint, current or stale
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
from typing import Any


def _plain(obj: Any) -> Any:
    """JSON fallback: dataclasses as their fields, anything else as text."""
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else str(obj)


def _cmd_data(args: argparse.Namespace) -> int:
    from tasks.demo import synth

    summary = synth.generate(Path(args.out), preset=args.preset, slice=args.slice, seed=args.seed, workers=args.workers)
    print(json.dumps({k: v for k, v in summary.items() if not isinstance(v, dict)}, indent=2))
    return 0


def _cmd_retrain(args: argparse.Namespace) -> int:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from flows.bridge.overrides import parse_assignments
    from flows.bridge.report import render_text
    from flows.retrain import retrain

    overrides = parse_assignments(args.set or [])
    chosen = {k: getattr(args, k) for k in ("backbone", "weights", "image_size", "epochs_frozen",
                                            "epochs_full", "lr_frozen", "lr_full")}
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
    else:  # verify
        version = registry.resolve(store, name, args.version)  # an alias or a version
        problems = registry.verify(store, name, version)
        print(json.dumps({"version": version, "problems": problems}, indent=2, default=_plain))
        return 1 if problems else 0
    print(json.dumps(result, indent=2, default=_plain))
    return 0


def _publish_defaults() -> tuple[str, str]:
    try:
        from tasks.common.config import PublishConfig, load

        cfg = load(PublishConfig)
        return cfg.store, cfg.model_name
    except Exception:  # no params.yaml here: plain defaults
        return "registry", "tagsmith"


def build_parser() -> argparse.ArgumentParser:
    store, model_name = _publish_defaults()
    p = argparse.ArgumentParser(prog="tagsmith", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("data", help="generate the embedded synthetic dataset into data/")
    d.add_argument("--preset", default="demo", choices=["tiny", "demo", "study"])
    d.add_argument("--slice", default="v1", choices=["v1", "v2"])
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    d.add_argument("--out", default="data")
    d.set_defaults(func=_cmd_data)

    r = sub.add_parser("retrain", help="run the retraining flow (every dvc.yaml stage as a cached Prefect task)")
    r.add_argument("--backbone")
    r.add_argument("--weights")
    r.add_argument("--image-size", type=int)
    r.add_argument("--epochs-frozen", type=int)
    r.add_argument("--epochs-full", type=int)
    r.add_argument("--lr-frozen", type=float)
    r.add_argument("--lr-full", type=float)
    r.add_argument("--force-publish", action="store_true", help="publish even if the quality gate refuses")
    r.add_argument("--refresh-cache", action="store_true", help="ignore Prefect's cache; DVC decides")
    r.add_argument("--experiment", metavar="NAME", help="also save the run as DVC experiment NAME (dvc exp show)")
    r.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="any params.yaml value")
    r.add_argument("--workspace", default=".")
    r.set_defaults(func=_cmd_retrain)

    s = sub.add_parser("status", help="fingerprint of each stage and whether it is current")
    s.add_argument("--workspace", default=".")
    s.add_argument("--no-refresh", dest="refresh", action="store_false",
                   help="do not run resolve_production first (then a moved alias shows only after the next run)")
    s.set_defaults(func=_cmd_status)

    rs = sub.add_parser("results-store", help="keep Prefect's results (the stage caches) in S3, shared by all workers")
    rs.add_argument("uri", help="s3://BUCKET/PREFIX")
    rs.add_argument("--endpoint-url", help="S3-compatible endpoint (MinIO, moto); default: AWS or $AWS_ENDPOINT_URL")
    rs.add_argument("--name", default="tagsmith-results", help="block name")
    rs.set_defaults(func=_cmd_results_store)

    pr = sub.add_parser("predict", help="label images with a published or local model")
    pr.add_argument("--model", required=True, help="alias, version, model folder or s3:// URI")
    pr.add_argument("inputs", nargs="+", help="images or folders")
    pr.add_argument("-o", "--output", default="predictions.csv")
    pr.add_argument("--batch-size", type=int, default=64)
    pr.add_argument("--store", default=store)
    pr.add_argument("--model-name", default=model_name)
    pr.set_defaults(func=_cmd_predict)

    g = sub.add_parser("registry", help="list, show, promote, roll back or verify published versions")
    g.add_argument("action", choices=["list", "show", "promote", "rollback", "verify"])
    g.add_argument("version", nargs="?")
    g.add_argument("--alias", default="production")
    g.add_argument("--store", default=store)
    g.add_argument("--model-name", default=model_name)
    g.set_defaults(func=_cmd_registry)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "action", None) in ("show", "promote", "verify") and not args.version:
        sys.exit(f"tagsmith registry {args.action}: a VERSION is required")
    try:
        return int(args.func(args))
    except Exception as e:  # one clear line for known failures; tracebacks for bugs
        from tasks.common.config import ConfigError
        from flows.deployment.results import ResultStorageError

        from tasks.registry.stores import RegistryError

        if isinstance(e, (ConfigError, FileNotFoundError, ResultStorageError, RegistryError)):
            sys.exit(f"tagsmith {args.command}: {e}")
        raise


if __name__ == "__main__":
    sys.exit(main())

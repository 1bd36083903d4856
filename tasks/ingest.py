"""Ingest stage: labelled images in, a validated, de-duplicated, split dataset out.

    python -m tasks.ingest            # reads params.yaml `ingest`, writes artifacts/dataset/

Every input row ends either in ``manifest.csv`` (kept) or in ``quarantine.csv`` (row, file,
reason, detail): ``stats.json`` checks ``kept + quarantined == rows_read``. Images are decoded
once here (in a process pool) only to prove they are usable and to hash their bytes; the
same bytes under two names are kept once, so they can never land in two splits. The run fails
when more than ``max_quarantine_share`` of the rows are faulty, after writing the outputs so
the quarantine can be inspected. Outputs are byte-deterministic.

A new data version costs its new images: with a memo (``tasks/dataset/memo.py``, params.yaml's
``memo`` section), the parent hashes each file (cheap next to decoding) and reuses the
perceptual hash an earlier run found for the same bytes under the same recipe (size limits,
code and library versions); only the rest is decoded. The outputs are the same either way.

Splits never move (``tasks/splits/sticky.py``): images the split ledger
(``ingest.splits_ledger``, git-tracked) or the production model's ledger
(``artifacts/production/ingest_ledger.tsv``, written by resolve_production) lists keep their
split; new ones are assigned and the extended ledger is written to
``artifacts/splits/ledger.tsv`` (for ``tagsmith splits record``, and published with the model).
"""

from __future__ import annotations

import csv
import multiprocessing
import os
import posixpath
import sys
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from tasks.common import paths
from tasks.common.config import IngestConfig, load
from tasks.common.errors import DataError, stage_main
from tasks.common.files import sha256_file, write_json
from tasks.splits import ledger, sticky
from tasks.dataset.imageio import ImageFault, resolve_under
from tasks.dataset.memo import Memo, code_version, open_memo, recipe_key
from tasks.splits.neardup import probe
from tasks.dataset.sources import SourceError, SourceRow, join_rel, read_source
from tasks.splits.stratify import plot_cooccurrence, split_stats

OUT_DIR = paths.DATASET
# Dropped by an explicit policy the user chose, listed in quarantine but not counted as faults.
POLICY_REASONS = frozenset({"no_mapped_category"})


class IngestError(DataError):
    """The run produced its outputs but must fail (too much quarantined, nothing kept)."""


@dataclass
class Summary:
    """What ``run`` did; the same numbers are in ``stats.json``."""

    rows_read: int
    kept: int
    quarantined: int
    by_reason: dict[str, int]
    split_counts: dict[str, int]
    out_dir: Path
    stats: dict = field(repr=False, default_factory=dict)


def _sha_or_none(path: str) -> str | None:
    try:
        return sha256_file(Path(path))
    except OSError:
        return None


def probe_recipe(cfg: IngestConfig) -> str:
    """The memo table of probe results: what a probe's outcome depends on besides the bytes."""
    import imagehash
    import PIL

    from tasks.dataset import imageio, resample
    from tasks.splits import neardup
    code = code_version(neardup.__file__, imageio.__file__, resample.__file__)
    return "probe-" + recipe_key(cfg.max_pixels, cfg.max_side, code, PIL.__version__, imagehash.__version__,
                                 np.__version__)[:32]


def _probe_all(paths: list[str], cfg: IngestConfig, memo: Memo | None = None) -> list[tuple[str | None, str, str, str]]:
    """Probe every path, in order, with a process pool and a progress bar on stderr.

    With a memo, the parent hashes each file (far cheaper than decoding it) and only images
    whose (sha256, recipe) the memo lacks are decoded; only usable images are memoized, so a
    fault is always reported from a fresh decode."""
    known: dict[str, str] = {}
    out: list = [None] * len(paths)
    todo = list(range(len(paths)))
    if memo is not None:
        table = probe_recipe(cfg)
        known = memo.load(table)
        todo = []
        # threads: hashlib releases the GIL on large buffers, so hashing uses every worker's core
        with ThreadPoolExecutor(max_workers=max(1, cfg.workers)) as hashing:
            shas = list(hashing.map(_sha_or_none, paths, chunksize=64))
        for i, sha in enumerate(shas):
            if sha is None:
                todo.append(i)  # unreadable: probe reports it
            elif sha in known:
                out[i] = (None, "", sha, known[sha])
            else:
                todo.append(i)
    jobs = [(paths[i], cfg.max_pixels, cfg.max_side) for i in todo]
    bar = dict(total=len(jobs), desc="ingest: decode+hash", unit="img", file=sys.stderr, disable=None)
    if cfg.workers <= 1 or len(jobs) < 16:
        got = [r for r in tqdm(map(probe, jobs), **bar)]
    else:
        chunk = max(1, len(jobs) // (cfg.workers * 16))
        # spawn, not fork: run() may be called from a threaded host (Prefect, pytest with TF loaded),
        # where forking can deadlock; workers import only tasks.splits.neardup and imageio.
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=cfg.workers, mp_context=ctx) as pool:
            got = list(tqdm(pool.map(probe, jobs, chunksize=chunk), **bar))
    for i, r in zip(todo, got):
        out[i] = r
    if memo is not None:
        memo.add(table, {r[2]: r[3] for r in got if r[0] is None and r[2] not in known})
    return out


def _make_ids(paths: list[str]) -> list[str]:
    """Stem-based ids; stems shared by several paths fall back to the path made flat."""
    stems = Counter(posixpath.splitext(posixpath.basename(p))[0] for p in paths)
    out = []
    for p in paths:
        stem = posixpath.splitext(posixpath.basename(p))[0]
        out.append(stem if stems[stem] == 1 else p.replace("/", "__").replace(".", "_"))
    return out


def _read_test_list(root: Path, cfg: IngestConfig) -> list[str]:
    if cfg.test_list is None:
        return []
    path = root / cfg.test_list
    if not path.is_file():
        raise SourceError(f"{path}: test_list file not found (ingest.test_list)")
    return [ln.strip() for ln in path.read_text(encoding="utf-8-sig").splitlines() if ln.strip()]


def _fixed_test(kept: list, ids: list[str], wanted: set[str], cfg: IngestConfig) -> tuple[np.ndarray, list[str]]:
    """Rows the user put in the test split: a source hint (VOC ImageSets) or a test_list entry
    naming the row by path under the root, path under the image folder, or id.

    Returns:
        (bool mask over ``kept``, sorted test_list entries that matched no kept row).
    """
    prefix = join_rel(cfg.voc_root, "JPEGImages") if cfg.source == "voc" else join_rel(cfg.images)
    names = [{k, k[len(prefix) + 1:] if prefix and k.startswith(prefix + "/") else k, i} for (_, k, _), i in zip(kept, ids)]
    mask = np.array([r.split_hint == "test" or bool(n & wanted) for (r, _, _), n in zip(kept, names)], dtype=bool)
    return mask, sorted(wanted - set().union(*names)) if wanted else []


def _screen(rows: list[SourceRow], root: Path, cfg: IngestConfig, quarantine: list) -> list[tuple[SourceRow, str, Path]]:
    """Row-level checks that need no decoding; returns (row, normalized path, absolute path)."""
    seen: dict[str, SourceRow] = {}
    dirs: dict[str, str] = {}  # resolved folders, shared by all rows of this run
    out = []
    for r in rows:
        if r.fault:
            quarantine.append((r.row, r.file, r.fault, r.detail))
            continue
        try:
            abs_path = resolve_under(root, r.file, dirs)
        except ImageFault as e:
            quarantine.append((r.row, r.file, e.reason, e.message))
            continue
        key = posixpath.normpath(r.file)
        if key in seen:
            first = seen[key]
            same = "same labels" if first.labels == r.labels else f"labels differ: {list(first.labels)} vs {list(r.labels)}"
            quarantine.append((r.row, r.file, "duplicate_row", f"already listed at row {first.row} ({same})"))
            continue
        seen[key] = r
        if not r.labels and not r.keep_empty and cfg.empty_labels == "reject":
            quarantine.append((r.row, r.file, "empty_labels", "no label (ingest.empty_labels: reject)"))
            continue
        out.append((r, key, abs_path))
    return out


def _dedupe(kept: list[tuple[SourceRow, str, str]], quarantine: list) -> list[tuple[SourceRow, str, str]]:
    """Keep one row per distinct image content: the lexicographically first path (independent
    of source order, so the three source formats agree)."""
    by_sha: dict[str, list[tuple[SourceRow, str, str]]] = {}
    for item in kept:
        by_sha.setdefault(item[2], []).append(item)
    out = []
    for group in by_sha.values():
        group.sort(key=lambda it: it[1])
        out.append(group[0])
        for r, key, _ in group[1:]:
            note = "" if r.labels == group[0][0].labels else f"; labels differ: {list(r.labels)} dropped"
            quarantine.append((r.row, r.file, "duplicate_image", f"same bytes as {group[0][1]} (kept){note}"))
    return out


def _write(out_dir: Path, classes: list[str], ids: list[str], kept: list, split: list[str],
           quarantine: list, stats: dict) -> None:
    """Write manifest.csv, quarantine.csv, classes.json and stats.json (LF, sorted keys)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "manifest.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["id", "path", "sha256", "labels", "split"])
        for i, (r, key, sha), s in zip(ids, kept, split):
            w.writerow([i, key, sha, ";".join(r.labels), s])
    with open(out_dir / "quarantine.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["row", "file", "reason", "detail"])
        w.writerows(quarantine)
    write_json(out_dir / "classes.json", {"classes": classes})
    write_json(out_dir / "stats.json", stats)


def _recorded(cfg: IngestConfig, production_ledger: Path | None) -> tuple[dict, dict, dict, list[str]]:
    """The splits already given: the git ledger's and the production model's, merged
    (``ledger.merge``: production's train and val win a conflict).

    Returns:
        (merged, git ledger, production ledger, conflicting sha256s).
    """
    git = ledger.read(Path(cfg.splits_ledger)) if cfg.splits_ledger else {}
    prod = ledger.read(production_ledger) if production_ledger and Path(production_ledger).is_file() else {}
    merged, conflicts = ledger.merge(git, prod)
    return merged, git, prod, conflicts


def _write_ledger(splits_dir: Path, cfg: IngestConfig, recorded: tuple[dict, dict, dict, list[str]],
                  got: sticky.Assignment) -> None:
    """Write the extended ledger and what changed; say on stderr when it needs recording.

    Kept out of ``stats.json``: recording the ledger must not change ingest's dataset outputs,
    or everything downstream would re-run for nothing."""
    merged, git, prod, conflicts = recorded
    splits_dir.mkdir(parents=True, exist_ok=True)
    ledger.write(splits_dir / paths.SPLITS_LEDGER.name, got.entries)
    # rows the git ledger lacks or gives another split: the images assigned now, and those only
    # production's ledger keeps (for as long as that model, or one trained after it, is production)
    new = sum(git.get(h) != e for h, e in got.entries.items())
    summary = {"ledger": cfg.splits_ledger, "recorded": len(merged), "rows": len(got.entries),
               "from_git": len(git), "from_production": len(prod), "only_in_production": len(merged) - len(git),
               "conflicts": len(conflicts), "conflict_examples": conflicts[:10],
               "assigned_now": got.assigned_now, "unrecorded": new}
    write_json(splits_dir / "summary.json", summary)
    if conflicts:
        print(f"ingest: {len(conflicts)} images have another split in {cfg.splits_ledger} than in the production "
              f"model's ledger; production's train/val split was kept (artifacts/splits/summary.json)",
              file=sys.stderr)
    if new and cfg.splits_ledger:
        print(f"ingest: {new} images have no split in {cfg.splits_ledger} yet (assigned now: {got.assigned_now}); "
              f"the published model carries them, and `tagsmith splits record` (commit {cfg.splits_ledger} "
              "with data.dvc) keeps them whatever production becomes", file=sys.stderr)


def run(cfg: IngestConfig, out_dir: Path = OUT_DIR, splits_dir: Path | None = None,
        production_ledger: Path | None = paths.PRODUCTION_LEDGER, memo: Memo | None = None) -> Summary:
    """Read, validate, de-duplicate and split the dataset; write ``out_dir``.

    Args:
        cfg: the ``ingest`` section (``cfg.root`` relative to the working directory).
        out_dir: where manifest.csv, classes.json, quarantine.csv, stats.json and
            cooccurrence.png go.
        splits_dir: where ledger.tsv (the ledger extended with the images assigned now) and
            summary.json (how many) go; default ``out_dir``'s sibling ``splits`` (augment,
            which reads ``out_dir``, never sees it).
        production_ledger: the production model's split ledger (resolve_production's
            ``ingest_ledger.tsv``); none when None or absent (ingest run outside the pipeline).
        memo: where probe results are reused from and stored (``tasks/dataset/memo.py``); None:
            decode every image. The outputs are the same either way.

    Returns:
        The summary (also written as stats.json).

    Raises:
        SourceError: the source itself is unreadable.
        LedgerError: the split ledger is missing or malformed.
        IngestError: after writing outputs, when too much is quarantined or nothing is kept.
    """
    root = Path(cfg.root)
    src = read_source(root, cfg)
    wanted = set(_read_test_list(root, cfg))
    both = _recorded(cfg, production_ledger)
    recorded = both[0]
    quarantine: list[tuple[int, str, str, str]] = []
    screened = _screen(src.rows, root, cfg, quarantine)
    probes = _probe_all([str(p) for _, _, p in screened], cfg, memo)
    decoded = []
    look: dict[str, str] = {}  # sha256 -> perceptual hash
    for (r, key, abs_path), (reason, msg, sha, ph) in zip(screened, probes):
        if reason:
            quarantine.append((r.row, r.file, reason, msg.replace(str(abs_path), r.file)))
        else:
            decoded.append((r, key, sha))
            look[sha] = ph
    kept = _dedupe(decoded, quarantine)

    ids = _make_ids([key for _, key, _ in kept])
    order = sorted(range(len(kept)), key=lambda i: ids[i])
    kept, ids = [kept[i] for i in order], [ids[i] for i in order]
    cidx = {c: i for i, c in enumerate(src.classes)}
    y = np.zeros((len(kept), len(src.classes)), dtype=np.int64)
    for i, (r, _, _) in enumerate(kept):
        y[i, [cidx[c] for c in r.labels]] = 1

    fixed, unmatched = _fixed_test(kept, ids, wanted, cfg)
    shas = [sha for _, _, sha in kept]
    got = sticky.assign(ids, [key for _, key, _ in kept], shas, [look[h] for h in shas], y, fixed, recorded,
                        max_distance=cfg.near_duplicate_distance, test_fraction=cfg.test_fraction,
                        val_fraction=cfg.val_fraction, seed=cfg.seed)
    split = got.split

    quarantine.sort(key=lambda q: (q[0], q[1], q[2]))
    by_reason = dict(sorted(Counter(q[2] for q in quarantine).items()))
    faults = sum(n for k, n in by_reason.items() if k not in POLICY_REASONS)
    rows_read = len(src.rows)
    share = faults / rows_read if rows_read else 0.0
    stats = {
        "source": cfg.source,
        "rows_read": rows_read,
        "kept": len(kept),
        "quarantined": len(quarantine),
        "quarantine_by_reason": by_reason,
        "quarantine_share": round(share, 6),
        "max_quarantine_share": cfg.max_quarantine_share,
        "empty_label_images": int((y.sum(axis=1) == 0).sum()),
        "num_classes": len(src.classes),
        "test_list": {"given": cfg.test_list, "entries": len(wanted), "unmatched": len(unmatched),
                      "unmatched_examples": unmatched[:20], "kept_out_of_test": len(got.overridden),
                      "kept_out_of_test_examples": got.overridden[:20]},
        "near_duplicates": got.near_duplicates,
        "user_test_rows": int(fixed.sum()),
        **split_stats(y, split, src.classes),
    }
    assert stats["kept"] + stats["quarantined"] == rows_read, "every row must be kept or quarantined"

    _write(out_dir, src.classes, ids, kept, split, quarantine, stats)
    _write_ledger(splits_dir or out_dir.parent / paths.SPLITS.name, cfg, both, got)
    plot_cooccurrence(y, src.classes, out_dir / "cooccurrence.png")

    summary = Summary(rows_read, len(kept), len(quarantine), by_reason, stats["counts"], out_dir, stats)
    if share > cfg.max_quarantine_share or not kept:
        top = ", ".join(f"{k}: {n}" for k, n in Counter({k: v for k, v in by_reason.items() if k not in POLICY_REASONS}).most_common(3))
        raise IngestError(
            f"{faults} of {rows_read} rows ({share:.1%}) quarantined, {len(kept)} kept (limit "
            f"ingest.max_quarantine_share = {cfg.max_quarantine_share:.1%}); look at "
            f"{out_dir / 'quarantine.csv'}, top reasons: {top or 'none'}"
        )
    return summary


def main() -> None:
    """Entry point of ``python -m tasks.ingest``."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    s = stage_main("ingest", lambda: run(load(IngestConfig), memo=open_memo()))
    print(f"ingest: {s.rows_read} rows read, {s.kept} kept, {s.quarantined} quarantined "
          f"{s.by_reason}; splits {s.split_counts} -> {s.out_dir}", file=sys.stderr)


if __name__ == "__main__":
    main()

"""Deterministic generator of a multi-label shapes dataset: the data a user would bring.

Each image holds 1-4 of 20 shape classes (``tasks/demo/shapes.py``) at varied scale, rotation,
position and colour, over gradient/noise backgrounds with thin lines and small blobs that are not
classes. Class frequencies are long-tailed (Zipf priors) and a few pairs tend to co-occur.
Output, in the study's format (what ``tasks.ingest`` reads)::

    <out>/images/000000.jpg ...   RGB JPEG, quality 90, no metadata
    <out>/labels.tsv              header ``filename<TAB>labels``; labels = sorted class indices
    <out>/classes.txt             one class name per line, line i = class index i
    <out>/test.txt                filenames designated as the test split, sorted

Every image's RNG is seeded from (seed, slice it was born in, index), so the same arguments
give byte-identical files on every run and with any number of workers. Slice ``v2`` keeps
v1's images (same names, same bytes) and appends 50 % more with shifted class balance: the
rare classes of v1 become the common ones.

    python -m tasks.demo.synth                                # demo: 3,000 images at 80 px -> data/
    python -m tasks.demo.synth --preset tiny --out /tmp/tiny  # 80 images at 48 px (tests)
    python -m tasks.demo.synth --preset study --workers 8     # 47,441 images at 256 px (15,516 test)
    python -m tasks.demo.synth --slice v2                     # demo v1 + 1,500 new images
"""

from __future__ import annotations

import argparse
import colorsys
import io
import json
import math
import multiprocessing
import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from tasks.demo.shapes import CLASSES, draw_shape

# count, stored size (px), test share. The study's 15,516 of 47,441 is reproduced exactly.
PRESETS: dict[str, tuple[int, int, float]] = {
    "tiny": (80, 48, 0.25),
    "demo": (3000, 80, 0.25),
    "study": (47441, 256, 15516 / 47441),
}
SLICES = {"v1": 1, "v2": 2}
JPEG_QUALITY = 90
N_OBJECTS_P = np.array([0.35, 0.30, 0.20, 0.15])  # 1, 2, 3, 4 objects per image
# Class popularity rank in v1 (0 = most common); v2's new images use the reverse order.
RANKS = [CLASSES.index(n) for n in (
    "circle", "square", "triangle", "star", "cross", "ring", "arrow", "hexagon", "bar", "heart",
    "diamond", "ellipse", "pentagon", "tshape", "crescent", "chevron", "trapezoid", "lshape",
    "checker", "bolt")]
# Pairs that often appear together: after one is drawn, its partner follows with this chance.
PARTNERS = {"star": "crescent", "arrow": "bar", "heart": "diamond", "cross": "ring",
            "lshape": "tshape", "checker": "square"}
PARTNER_P = 0.5
OURS = {"images", "labels.tsv", "classes.txt", "test.txt", ".gitignore"}
IMAGE_NAME = re.compile(r"^\d{6,}\.jpg$")


def class_prior(tag: int) -> np.ndarray:
    """Zipf(1) class probabilities for images born in slice ``tag`` (v2 reverses the ranks)."""
    order = RANKS if tag == 1 else RANKS[::-1]
    p = np.empty(len(CLASSES))
    p[order] = 1.0 / np.arange(1, len(CLASSES) + 1)
    return p / p.sum()


def _pick_classes(rng: np.random.Generator, prior: np.ndarray) -> list[int]:
    n = int(rng.choice(4, p=N_OBJECTS_P)) + 1
    chosen: list[int] = []
    while len(chosen) < n:
        partner = PARTNERS.get(CLASSES[chosen[-1]]) if chosen else None
        if partner and CLASSES.index(partner) not in chosen and rng.random() < PARTNER_P:
            chosen.append(CLASSES.index(partner))
            continue
        p = prior.copy()
        p[chosen] = 0.0  # one object per class, so the label count equals the object count
        chosen.append(int(rng.choice(len(p), p=p / p.sum())))
    return chosen


def _hsv(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))
    return round(r * 255), round(g * 255), round(b * 255)


def _luma(c: tuple[int, int, int] | np.ndarray) -> float:
    return 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]


def _clutter(draw: ImageDraw.ImageDraw, rng: np.random.Generator, side: int, n: int) -> None:
    """Thin lines, arcs and small blobs: structure a model must learn to ignore."""
    for _ in range(n):
        colour = _hsv(rng.random(), rng.random(), rng.uniform(0.1, 1.0))
        kind = rng.integers(3)
        if kind == 0:
            xy = [tuple(p) for p in rng.uniform(-0.1, 1.1, (2, 2)) * side]
            draw.line(xy, fill=colour, width=int(rng.integers(1, 3)) * side // 160 + 1)
        elif kind == 1:
            x, y = rng.uniform(0, side, 2)
            r = rng.uniform(0.1, 0.4) * side
            start = float(rng.uniform(0, 360))
            draw.arc([x - r, y - r, x + r, y + r], start, start + float(rng.uniform(30, 120)),
                     fill=colour, width=side // 160 + 1)
        else:
            x, y = rng.uniform(0, side, 2)
            rx, ry = rng.uniform(0.008, 0.03, 2) * side
            draw.ellipse([x - rx, y - ry, x + rx, y + ry], fill=colour)


def render(seed: int, tag: int, index: int, size: int) -> tuple[bytes, list[int]]:
    """Draw one image.

    Args:
        seed: dataset seed.
        tag: slice the image was born in (1 = v1, 2 = v2); picks the class prior.
        index: image index; with seed and tag, the image's whole RNG state.
        size: stored side in pixels.

    Returns:
        The JPEG bytes and the sorted class indices present.
    """
    rng = np.random.default_rng([seed, tag, index])
    classes = _pick_classes(rng, class_prior(tag))
    side = 2 * size  # drawn at 2x, then halved: cheap anti-aliasing
    # Background: a linear gradient between two related colours in a random direction.
    h, s, v = rng.random(), rng.uniform(0.0, 0.6), rng.uniform(0.2, 0.9)
    c0 = np.array(_hsv(h, s, v), np.float32)
    c1 = np.array(_hsv(h + rng.uniform(-0.15, 0.15), s + rng.uniform(-0.2, 0.2),
                       v + rng.uniform(-0.25, 0.25)), np.float32)
    a = rng.uniform(0, 2 * math.pi)
    grid = ((np.arange(size, dtype=np.float32) + 0.5) / size - 0.5)
    t = np.clip(0.5 + math.cos(a) * grid[None, :] + math.sin(a) * grid[:, None], 0, 1)
    bg = (c0 + t[..., None] * (c1 - c0)).astype(np.uint8)  # at 1x: smooth, so upsampling is free
    canvas = Image.fromarray(bg, "RGB").resize((side, side), Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(canvas)
    _clutter(draw, rng, side, int(rng.integers(0, 7)))

    n = len(classes)
    placed: list[tuple[float, float, float]] = []
    for cls in classes:
        r = rng.uniform(0.10, 0.30 - 0.03 * (n - 1)) * side
        best, best_gap = None, -math.inf
        for _ in range(30):  # keep objects apart so every label stays visible
            x, y = rng.uniform(0.7 * r, side - 0.7 * r, 2)
            gap = min((math.hypot(x - px, y - py) - 0.8 * (r + pr) for px, py, pr in placed),
                      default=math.inf)
            if gap > best_gap:
                best, best_gap = (x, y), gap
            if gap >= 0:
                break
        x, y = best
        placed.append((x, y, r))
        local = bg[min(int(y) // 2, size - 1), min(int(x) // 2, size - 1)]
        need = rng.uniform(20, 70)  # luminance contrast with the background: some objects faint
        for _ in range(20):
            colour = _hsv(rng.random(), rng.uniform(0.3, 1.0), rng.uniform(0.15, 1.0))
            if abs(_luma(colour) - _luma(local)) >= need:
                break
        draw_shape(canvas, CLASSES[cls], (x, y), r, rng.uniform(0, 2 * math.pi), colour)
    _clutter(draw, rng, side, int(rng.integers(0, 3)))  # some clutter crosses the objects

    small = np.asarray(canvas.reduce(2), dtype=np.float32)
    noise = rng.standard_normal(small.shape, dtype=np.float32) * rng.uniform(2.0, 14.0)
    image = Image.fromarray(np.clip(small + noise, 0, 255).astype(np.uint8), "RGB")
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=JPEG_QUALITY, subsampling=0, optimize=False)
    return buf.getvalue(), sorted(classes)


def _write_one(job: tuple[Path, int, int, int, int]) -> tuple[int, list[int]]:
    images, seed, tag, index, size = job
    data, labels = render(seed, tag, index, size)
    path = images / f"{index:06d}.jpg"
    if not (path.exists() and path.read_bytes() == data):  # unchanged files keep their mtime
        path.write_bytes(data)
    return index, labels


def _check_out(out: Path) -> None:
    """Refuse to write into a folder holding anything this generator did not write."""
    if not out.exists():
        return
    if not out.is_dir():
        raise ValueError(f"{out}: exists and is not a directory")
    foreign = sorted(p.name for p in out.iterdir() if p.name not in OURS)
    images = out / "images"
    if images.exists():
        foreign += sorted(f"images/{p.name}" for p in images.iterdir()
                          if not (p.is_file() and IMAGE_NAME.match(p.name)))
    if foreign:
        raise ValueError(f"{out}: refusing to overwrite, it holds files the generator did not "
                         f"write: {', '.join(foreign[:5])}{' ...' if len(foreign) > 5 else ''}")


def generate(out: Path, preset: str = "demo", slice: str = "v1", seed: int = 0,
             count: int | None = None, size: int | None = None, workers: int = 1) -> dict:
    """Write the dataset under ``out``; stale images from an earlier run are removed.

    Args:
        out: dataset root (``images/``, ``labels.tsv``, ``classes.txt``, ``test.txt``).
        preset: ``tiny``, ``demo`` or ``study`` (count, size and test share).
        slice: ``v1``, or ``v2`` = v1 plus 50 % more images with shifted class balance.
        seed: dataset seed.
        count: number of v1 images (overrides the preset's); v2 adds ``count // 2``.
        size: stored image side in pixels (overrides the preset's).
        workers: processes drawing images; the output does not depend on it.

    Returns:
        Summary: preset, slice, seed, size, images, train, test, new (born in this slice),
        labels_per_image, class_images (images per class name), class_share.

    Raises:
        ValueError: unknown preset/slice, bad count/size, or ``out`` holds foreign files.
    """
    if preset not in PRESETS or slice not in SLICES:
        raise ValueError(f"preset must be one of {sorted(PRESETS)} and slice one of "
                         f"{sorted(SLICES)}, got preset={preset!r} slice={slice!r}")
    base, default_size, test_share = PRESETS[preset]
    base, size = count if count is not None else base, size if size is not None else default_size
    if base < 1 or size < 16:
        raise ValueError(f"count must be >= 1 and size >= 16, got count={base} size={size}")
    out = Path(out)
    _check_out(out)
    # Blocks of images born in each slice: (tag, first index, count).
    blocks = [(1, 0, base)] + ([(2, base, base // 2)] if SLICES[slice] == 2 else [])
    total = sum(n for _, _, n in blocks)
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    jobs = [(images, seed, tag, start + i, size) for tag, start, n in blocks for i in range(n)]

    labels: dict[int, list[int]] = {}
    bar = tqdm(total=total, desc=f"synth {preset}/{slice}", unit="img", disable=None)
    if workers <= 1:
        results = map(_write_one, jobs)
        for index, lab in results:
            labels[index] = lab
            bar.update()
    else:
        # spawn, not fork: callers (tests, flows) may hold TensorFlow threads a fork would copy.
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            for index, lab in pool.imap_unordered(_write_one, jobs, chunksize=32):
                labels[index] = lab
                bar.update()
    bar.close()

    names = {f"{i:06d}.jpg" for i in labels}
    for stale in sorted(p for p in images.iterdir() if p.name not in names):
        stale.unlink()
    test: list[str] = []
    for tag, start, n in blocks:  # each slice's own images are split on their own: v1 stays put
        perm = np.random.default_rng([seed, tag, 2**31 - 1]).permutation(n)
        test += [f"{start + int(i):06d}.jpg" for i in perm[:round(test_share * n)]]
    rows = [f"{i:06d}.jpg\t{','.join(map(str, labels[i]))}\n" for i in sorted(labels)]
    (out / "labels.tsv").write_text("filename\tlabels\n" + "".join(rows), encoding="utf-8")
    (out / "classes.txt").write_text("".join(c + "\n" for c in CLASSES), encoding="utf-8")
    (out / "test.txt").write_text("".join(f + "\n" for f in sorted(test)), encoding="utf-8")

    per_class = np.zeros(len(CLASSES), int)
    for lab in labels.values():
        per_class[lab] += 1
    cardinality = np.bincount([len(v) for v in labels.values()], minlength=5)[1:]
    return {
        "preset": preset, "slice": slice, "seed": seed, "size": size, "images": total,
        "train": total - len(test), "test": len(test), "new": blocks[-1][2],
        "labels_per_image": {str(k + 1): int(c) for k, c in enumerate(cardinality)},
        "class_images": {c: int(n) for c, n in zip(CLASSES, per_class)},
        "class_share": {c: round(int(n) / total, 4) for c, n in zip(CLASSES, per_class)},
    }


def main(argv: list[str] | None = None) -> None:
    """CLI: ``python -m tasks.demo.synth [--preset ...] [--slice ...] [--out data] ...``."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="demo")
    ap.add_argument("--slice", choices=sorted(SLICES), default="v1")
    ap.add_argument("--out", type=Path, default=Path("data"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--count", type=int, default=None, help="v1 images (default: the preset's)")
    ap.add_argument("--size", type=int, default=None, help="side in px (default: the preset's)")
    ap.add_argument("--workers", type=int, default=1)
    a = ap.parse_args(argv)
    try:
        summary = generate(a.out, a.preset, a.slice, a.seed, a.count, a.size, a.workers)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    print(json.dumps(summary, sort_keys=True, indent=2))


if __name__ == "__main__":
    main()

"""Near-duplicate images: a perceptual hash per image, and groups of images whose hashes are
within a small Hamming distance.

Exact bytes are not enough to keep a split clean: the same shot re-encoded, resized or cropped
slightly has other bytes but almost the same perceptual hash (Barz & Denzler 2020 found 3.3 %
of CIFAR-10's test images near-duplicated in its training set). Ingest puts each group in one
split.

The hash is ``imagehash.phash`` (64 bits: 32x32 grayscale, DCT, the 8x8 lowest frequencies
against their median). Re-encoding and resizing move it by 0-2 bits, a crop of a few percent
by 2-10; distinct photos sit around 32.

Grouping is single-linkage (a chain of close pairs is one group) and costs far less than
comparing all pairs: multi-index hashing splits the 64 bits into ``max_distance + 1`` chunks;
two hashes within ``max_distance`` bits differ in at most that many chunks, so they agree
exactly on at least one (pigeonhole). Only hashes sharing a chunk value are compared.

Library only; ``python -m tasks.ingest`` runs ``probe`` in its process pool (augment never
hashes, so this module stays out of its imports).
"""

from __future__ import annotations

from pathlib import Path

import imagehash
import numpy as np
from PIL import Image

from tasks.common.files import sha256_bytes
from tasks.dataset.imageio import ImageFault, open_rgb

HASH_BITS = 64
_BLOCK = 2048  # rows compared at once inside one bucket: bounds memory for huge buckets


def phash(img: Image.Image) -> str:
    """The image's 64-bit perceptual hash as 16 hex digits."""
    return str(imagehash.phash(img, hash_size=8))


def probe(job: tuple[str, int, int]) -> tuple[str | None, str, str, str]:
    """Check that an image opens as RGB and hash its bytes and its look (a process-pool job).

    Args:
        job: (path, max_pixels, max_side).

    Returns:
        (fault reason or None, fault message, sha256 hex of the file bytes or "", perceptual
        hash or "").
    """
    path, max_pixels, max_side = job
    try:
        img = open_rgb(Path(path), max_pixels=max_pixels, max_side=max_side)
    except ImageFault as e:
        return e.reason, e.message, "", ""
    with open(path, "rb") as f:
        return None, "", sha256_bytes(f.read()), phash(img)


def _chunks(max_distance: int) -> list[tuple[int, int]]:
    """(shift, width) of ``max_distance + 1`` nearly equal bit chunks covering 64 bits."""
    n = max_distance + 1
    widths = [HASH_BITS // n + (1 if i < HASH_BITS % n else 0) for i in range(n)]
    shifts = np.cumsum([0] + widths[:-1])
    return [(int(s), w) for s, w in zip(shifts, widths)]


def close_pairs(hashes: list[str], max_distance: int) -> np.ndarray:
    """Every pair ``(i, j)``, ``i < j``, whose hashes differ in at most ``max_distance`` bits.

    Args:
        hashes: 16-hex-digit perceptual hashes.
        max_distance: Hamming distance threshold, 0..63.

    Returns:
        int64 array of shape [pairs, 2], sorted, without repeats.
    """
    h = np.array([int(x, 16) for x in hashes], dtype=np.uint64)
    found: list[np.ndarray] = []
    for shift, width in _chunks(max_distance):
        key = (h >> np.uint64(shift)) & np.uint64((1 << width) - 1)
        order = np.argsort(key, kind="stable")
        bounds = np.flatnonzero(np.diff(key[order])) + 1
        for run in np.split(order, bounds):
            if len(run) < 2:
                continue
            run = np.sort(run)
            for start in range(0, len(run), _BLOCK):
                rows = run[start:start + _BLOCK]
                dist = np.bitwise_count(h[rows][:, None] ^ h[run][None, :])
                i, j = np.nonzero(dist <= max_distance)
                keep = rows[i] < run[j]
                found.append(np.stack([rows[i][keep], run[j][keep]], axis=1))
    if not found:
        return np.zeros((0, 2), dtype=np.int64)
    return np.unique(np.concatenate(found).astype(np.int64), axis=0)


def group_ids(hashes: list[str], max_distance: int) -> np.ndarray:
    """Single-linkage groups of near-duplicate hashes.

    Args:
        hashes: 16-hex-digit perceptual hashes, one per image.
        max_distance: two images within this many bits are near-duplicates.

    Returns:
        int64 array, one per hash: the smallest index of its group (a lone image: its own).
    """
    # here, not at the top: probe's pool workers import this module and never group
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(hashes)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    pairs = close_pairs(hashes, max_distance)
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, label = connected_components(graph, directed=False)
    first = np.full(label.max() + 1, n, dtype=np.int64)
    np.minimum.at(first, label, np.arange(n))
    return first[label]

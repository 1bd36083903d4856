"""The 20 shape classes of the synthetic dataset, as polygons in unit coordinates.

Every shape is a list of ``(points, keep)`` parts: ``keep=True`` parts are filled, ``keep=False``
parts are cut out afterwards (holes of the ring, the bite of the crescent). Points are
normalised so the shape is centred on its bounding box and fits the unit circle; ``draw_shape``
scales, rotates and places them. Curves are many-sided polygons so every class is drawn the same
way (one mask per object), which keeps rendering simple and byte-deterministic.

The set is chosen to stay tellable apart at ~15 px across: no two classes are rotations of each
other (the diamond is elongated, the bar much thinner than the ellipse), and every class maps to
itself under flips, so flip augmentation never changes a label.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

Part = tuple[np.ndarray, bool]


def _ngon(n: int, r: float = 1.0, phase: float = -math.pi / 2, dx: float = 0.0, dy: float = 0.0,
          sx: float = 1.0) -> np.ndarray:
    """Regular n-gon (a circle when n is large), optionally stretched along x by ``sx``."""
    t = phase + 2 * math.pi * np.arange(n) / n
    return np.stack([dx + sx * r * np.cos(t), dy + r * np.sin(t)], axis=1)


def _poly(*xy: tuple[float, float]) -> np.ndarray:
    return np.asarray(xy, dtype=float)


def _star() -> np.ndarray:
    outer, inner = _ngon(5, 1.0), _ngon(5, 0.42, phase=-math.pi / 2 + math.pi / 5)
    return np.stack([outer, inner], axis=1).reshape(-1, 2)


def _heart() -> np.ndarray:
    t = np.linspace(0, 2 * math.pi, 64, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    return np.stack([x, y], axis=1)


def _checker() -> list[Part]:
    # 3x3 board, the five cells with (i + j) even: reads as a checker, not as a cross or square.
    cells = []
    for i in range(3):
        for j in range(3):
            if (i + j) % 2 == 0:
                cells.append((_poly((i, j), (i + 1, j), (i + 1, j + 1), (i, j + 1)), True))
    return cells


_RAW: dict[str, list[Part]] = {
    "circle": [(_ngon(48), True)],
    "square": [(_poly((-1, -1), (1, -1), (1, 1), (-1, 1)), True)],
    "triangle": [(_ngon(3), True)],
    "star": [(_star(), True)],
    "cross": [(_poly((-.3, -1), (.3, -1), (.3, -.3), (1, -.3), (1, .3), (.3, .3), (.3, 1),
                     (-.3, 1), (-.3, .3), (-1, .3), (-1, -.3), (-.3, -.3)), True)],
    "ring": [(_ngon(48), True), (_ngon(48, 0.55), False)],
    "hexagon": [(_ngon(6, phase=0.0), True)],
    "diamond": [(_poly((0, -1), (.55, 0), (0, 1), (-.55, 0)), True)],
    "crescent": [(_ngon(48), True), (_ngon(48, 0.85, dx=0.5, dy=-0.15), False)],
    "heart": [(_heart(), True)],
    "arrow": [(_poly((-1, -.18), (.2, -.18), (.2, -.55), (1, 0), (.2, .55), (.2, .18),
                     (-1, .18)), True)],
    "pentagon": [(_ngon(5), True)],
    "ellipse": [(_ngon(48, sx=0.55), True)],
    "trapezoid": [(_poly((-.5, -.6), (.5, -.6), (1, .6), (-1, .6)), True)],
    "bar": [(_poly((-1, -.25), (1, -.25), (1, .25), (-1, .25)), True)],
    # An obtuse (~135 deg) V, so a rotated chevron is never mistaken for the right-angled L.
    "chevron": [(_poly((-1, -.35), (0, .05), (1, -.35), (1, .2), (0, .6), (-1, .2)), True)],
    "lshape": [(_poly((-.6, -1), (-.1, -1), (-.1, .5), (.7, .5), (.7, 1), (-.6, 1)), True)],
    "tshape": [(_poly((-1, -1), (1, -1), (1, -.55), (.25, -.55), (.25, 1), (-.25, 1),
                      (-.25, -.55), (-1, -.55)), True)],
    "checker": _checker(),
    "bolt": [(_poly((.1, -1), (.55, -1), (.15, -.15), (.6, -.15), (-.35, 1), (-.05, .15),
                    (-.5, .15)), True)],
}


def _normalise(parts: list[Part]) -> list[Part]:
    """Centre on the bounding box of the kept parts and scale into the unit circle."""
    kept = np.concatenate([p for p, keep in parts if keep])
    centre = (kept.min(axis=0) + kept.max(axis=0)) / 2
    radius = float(np.max(np.linalg.norm(kept - centre, axis=1)))
    return [((p - centre) / radius, keep) for p, keep in parts]


SHAPES: dict[str, list[Part]] = {name: _normalise(parts) for name, parts in _RAW.items()}
CLASSES: list[str] = list(SHAPES)


def draw_shape(canvas: Image.Image, name: str, centre: tuple[float, float], radius: float,
               angle: float, colour: tuple[int, int, int]) -> None:
    """Paint one shape onto ``canvas`` in place.

    Args:
        canvas: RGB image to draw on.
        name: a key of ``SHAPES``.
        centre: (x, y) pixel position of the shape's centre.
        radius: pixel radius of the circle the shape fits in.
        angle: rotation in radians.
        colour: RGB fill.
    """
    c, s = math.cos(angle), math.sin(angle)
    rot = np.array([[c, -s], [s, c]]) * radius
    # The mask covers only the shape's bounding square: pasting a full-canvas mask per object
    # was most of the drawing time at 256 px.
    x0, y0 = math.floor(centre[0] - radius) - 1, math.floor(centre[1] - radius) - 1
    box = 2 * math.ceil(radius) + 3
    mask = Image.new("L", (box, box), 0)
    draw = ImageDraw.Draw(mask)
    offset = np.asarray(centre) - (x0, y0)
    for points, keep in SHAPES[name]:
        xy = points @ rot.T + offset
        # Rounded to 1/8 px so float noise in the last bits can never change a drawn pixel.
        draw.polygon([(round(x * 8) / 8, round(y * 8) / 8) for x, y in xy], fill=255 if keep else 0)
    canvas.paste(colour, (x0, y0, x0 + box, y0 + box), mask)

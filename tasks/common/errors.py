"""One error policy: expected failures derive from ``TagsmithError``; bugs are everything else.

An expected failure is one a user can fix from the message alone: a params.yaml that does not
validate, a dataset that breaks its contract, weights that are missing, a registry that cannot
be reached. Every stage's ``main`` runs through ``stage_main``, which prints such an error as
``<stage>: error: <message>`` and exits 1, and lets anything else (a bug) show its traceback,
because hiding a traceback behind a one-line message makes bugs look like bad input.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import NoReturn, TypeVar

T = TypeVar("T")


class TagsmithError(Exception):
    """Base of every expected failure; the message is written for the person running tagsmith."""


class DataError(TagsmithError, ValueError):
    """Input data that breaks a stage's contract (empty split, other classes, no usable image)."""


def fail(stage: str, error: BaseException) -> NoReturn:
    """Print ``<stage>: error: <message>`` on stderr and exit 1."""
    print(f"{stage}: error: {error}", file=sys.stderr)
    raise SystemExit(1)


def stage_main(stage: str, body: Callable[[], T]) -> T:
    """Run a stage's ``main`` body under the error policy (see the module docstring).

    Args:
        stage: the name printed before the message (``ingest``, ``train_full``, ``predict``...).
        body: the work; expected failures raise a ``TagsmithError``.

    Returns:
        What ``body`` returns.
    """
    try:
        return body()
    # A missing input file is the user's to fix (an upstream stage not run, a wrong path) and
    # its message names the file; every other built-in exception is treated as a bug.
    except (TagsmithError, FileNotFoundError) as e:
        fail(stage, e)

"""The event ``tagsmith data add`` emits, which the retrain deployment's trigger waits for.

``tagsmith.data.slice-added`` on the resource ``tagsmith.data.source.<uri>``: the trigger in
``infra/prefect.yaml`` matches any source (``tagsmith.data.source.*``). The payload names the
slice, so a run (or a person reading the event feed) knows what arrived.
"""

from __future__ import annotations

import os

from tasks.datasource.slices import SliceReport

EVENT = "tagsmith.data.slice-added"
RESOURCE_PREFIX = "tagsmith.data.source."


def emit_slice_added(report: SliceReport) -> str | None:
    """Emit the event when a Prefect API is configured; returns the event id, or None when no
    API is set (nothing to tell: the nightly schedule will still pick the slice up)."""
    if not os.environ.get("PREFECT_API_URL"):
        return None
    from prefect.events import emit_event

    event = emit_event(
        event=EVENT,
        resource={"prefect.resource.id": RESOURCE_PREFIX + report.source,
                  "prefect.resource.name": report.source},
        payload={"slice": report.slice, "images": report.images, "bytes": report.bytes,
                 "new_classes": report.new_classes, "skipped": len(report.skipped)},
    )
    _flush()
    return str(event.id) if event else None


def _flush() -> None:
    """A short-lived command must send the event before it exits: emit_event queues it on a
    background worker, which is drained here."""
    from prefect.events.worker import EventsWorker

    EventsWorker.drain_all()

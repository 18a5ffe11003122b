"""Consumes ``job-status``: the print-shop automation catalog (art approval, production, completion,
tracking, declined and re-sent artwork, status toasts and SMS).

``concurrency=1`` (faust-streaming #606, see ``agents/actions.py``). Each event is judged where it
arrives (:func:`streamapp.agent_steps.judge_catalog_event`): the catalog keeps no table.
"""

from __future__ import annotations

from faust import StreamT
from pydantic import TypeAdapter

from schemas.events import CatalogEvent, JobStatusEvent
from streamapp.agent_steps import judge_each
from streamapp.app import app, runtime

_job_status = TypeAdapter[CatalogEvent](JobStatusEvent)
JOB_STATUS_TYPES = frozenset({"job.status_changed", "artwork.declined", "artwork.resubmitted", "job.tracking_added"})


@app.agent(runtime.topics.job_status, concurrency=1)
async def react_to_job_status(stream: StreamT[bytes]) -> None:
    await judge_each(stream, _job_status, JOB_STATUS_TYPES)

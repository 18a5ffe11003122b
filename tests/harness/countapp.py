"""A Faust app for the recovery smoke test, built by streamapp's own app factory.

It counts keyed events from ``COUNT_SOURCE_TOPIC`` in a changelog-backed table
and serves the whole table at ``/counts``. Run one worker at a time: the view
only sees this worker's partitions.
"""

from __future__ import annotations

import os

from faust import StreamT
from faust.web import Request, Response, View

from streamapp.factory import create_app
from streamapp.settings import Settings

settings = Settings()
app = create_app(settings, autodiscover=False)

source = app.topic(os.environ["COUNT_SOURCE_TOPIC"], key_serializer="raw", value_serializer="raw")
counts = app.Table("counts", default=int)


@app.agent(source, concurrency=1)
async def count(stream: StreamT[bytes]) -> None:
    async for key, _value in stream.items():
        counts[key.decode()] += 1


@app.page("/counts")
async def dump_counts(web: View, request: Request) -> Response:
    return web.json(dict(counts.items()))

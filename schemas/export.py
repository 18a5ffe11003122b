"""JSON Schema files of every contract: ``python -m schemas.export [--check]``.

Writes ``schemas/json/<name>.schema.json``; with ``--check`` writes nothing and
exits 1 if a committed file differs from what the models generate.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from schemas.actions import Action
from schemas.config import ConfigRecord
from schemas.deadletter import DeadLetter
from schemas.events import JobStatusEvent, OrdersEvent, PaymentsEvent

OUT = Path(__file__).resolve().parent / "json"

#: file stem -> (type, title). One file per topic value.
CONTRACTS: dict[str, tuple[Any, str]] = {
    "orders": (OrdersEvent, "Value of the orders topic"),
    "job-status": (JobStatusEvent, "Value of the job-status topic"),
    "payments": (PaymentsEvent, "Value of the payments topic"),
    "actions": (Action, "Value of the actions topic"),
    "shop-config": (ConfigRecord, "Value of the shop-config topic"),
    "dead-letters": (DeadLetter, "Value of the dead-letters topic"),
}


def render(kind: Any, title: str) -> str:
    schema = TypeAdapter(kind).json_schema(mode="validation")
    schema["title"] = title
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def generated() -> dict[Path, str]:
    return {OUT / f"{stem}.schema.json": render(kind, title) for stem, (kind, title) in CONTRACTS.items()}


def main(argv: list[str]) -> int:
    files = generated()
    if "--check" in argv:
        stale = [path.name for path, text in files.items() if not path.exists() or path.read_text() != text]
        if stale:
            print(f"stale JSON Schema files: {', '.join(stale)}; run python -m schemas.export", file=sys.stderr)
            return 1
        return 0
    OUT.mkdir(exist_ok=True)
    for path, text in files.items():
        path.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

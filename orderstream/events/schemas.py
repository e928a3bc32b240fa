"""Each topic's value schema: generated from its model, committed as `schemas/<topic>.v<N>.json`.

A committed version is published: it never changes. A model change that alters the schema
raises the topic's version here; the new version must be backward compatible with the one
before it (`orderstream.events.compat`). `python -m orderstream.events.schemas` (`make
schemas`) writes the current versions and refuses a changed or incompatible one;
`--check` only says whether the committed files match the code.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orderstream.events.compat import breaking_changes
from orderstream.events.models import DeliveryOrder, InventoryOrder, OrderEvent
from orderstream.settings import DELIVERY_TOPIC, INVENTORY_TOPIC

DRAFT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_DIR = Path("schemas")  # in the repository, beside the package
VERSIONED_FILE = re.compile(r"^(?P<topic>.+)\.v(?P<version>[0-9]+)\.json$")


@dataclass(frozen=True)
class TopicSchema:
    """One topic's value: its model and the version of the schema the model generates."""

    topic: str  # the topic's standard name; configured topic names share its schema
    model: type[OrderEvent]
    version: int

    @property
    def file_name(self) -> str:
        return f"{self.topic}.v{self.version}.json"

    @property
    def uri(self) -> str:
        """The schema's `$id`, and the `ce_dataschema` header of its messages."""
        return f"urn:orderstream:schemas/{self.file_name}"

    def document(self) -> dict[str, Any]:
        return {"$schema": DRAFT, "$id": self.uri, **self.model.model_json_schema()}

    def text(self) -> str:
        return schema_text(self.document())


# Per event type (topic names are settings); raise a version when its model's schema changes.
TOPIC_SCHEMAS = {
    "inventory": TopicSchema(INVENTORY_TOPIC, InventoryOrder, 1),
    "delivery": TopicSchema(DELIVERY_TOPIC, DeliveryOrder, 1),
}


def schema_of(event_type: str) -> TopicSchema:
    return TOPIC_SCHEMAS[event_type]


def schema_text(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def committed_versions(directory: Path, topic: str) -> dict[int, dict[str, Any]]:
    """The committed schemas of `topic` by version, oldest first."""
    found = {}
    for path in directory.glob(f"{topic}.v*.json"):
        match = VERSIONED_FILE.match(path.name)
        if match and match["topic"] == topic:
            found[int(match["version"])] = json.loads(path.read_text(encoding="utf-8"))
    return dict(sorted(found.items()))


def problems(directory: Path) -> list[str]:
    """Why the committed schemas in `directory` are not those of the code; [] when they are."""
    found: list[str] = []
    for schema in TOPIC_SCHEMAS.values():
        versions = committed_versions(directory, schema.topic)
        current = versions.get(schema.version)
        if current is None:
            found.append(f"{schema.file_name} is not committed: run `make schemas`")
        elif schema_text(current) != schema.text():
            found.append(
                f"{schema.file_name} differs from {schema.model.__name__}: a committed version never changes, "
                f"so raise the {schema.topic} version in orderstream/events/schemas.py and run `make schemas`"
            )
        if max(versions, default=schema.version) > schema.version:
            found.append(f"{schema.topic} has a committed version above {schema.version}, the code's")
        older = [v for v in versions if v < schema.version]
        if older:
            breaking = breaking_changes(versions[max(older)], schema.document())
            found.extend(f"{schema.file_name} breaks v{max(older)}: {b}" for b in breaking)
    return found


def write(directory: Path) -> list[Path]:
    """Write the code's schema versions that are not committed yet; returns the files written."""
    written = []
    directory.mkdir(parents=True, exist_ok=True)
    for schema in TOPIC_SCHEMAS.values():
        path = directory / schema.file_name
        if not path.exists():
            path.write_text(schema.text(), encoding="utf-8")
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m orderstream.events.schemas", description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=SCHEMA_DIR, help="the schemas directory (default: ./schemas)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 unless the files match the code")
    args = parser.parse_args(argv)
    if not args.check:
        for path in write(args.dir):
            print(f"wrote {path}")
    found = problems(args.dir)
    for problem in found:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())

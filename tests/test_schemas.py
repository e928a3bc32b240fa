"""The committed topic schemas: they are the code's, and every version is backward compatible with
the one before (a consumer on v(n) reads v(n-1) messages)."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import jsonschema
import pytest

from orderstream.events import schemas
from orderstream.events.compat import breaking_changes
from orderstream.events.schemas import TOPIC_SCHEMAS, committed_versions, problems

pytestmark = pytest.mark.unit

COMMITTED = Path(__file__).resolve().parents[1] / "schemas"
V1 = TOPIC_SCHEMAS["inventory"].document()


def test_the_committed_schemas_are_the_code_s():
    assert problems(COMMITTED) == []
    assert sorted(p.name for p in COMMITTED.glob("*.json")) == ["delivery_orders.v1.json", "inventory_orders.v1.json"]


@pytest.mark.parametrize("event_type", sorted(TOPIC_SCHEMAS))
def test_every_committed_version_is_a_valid_2020_12_schema_compatible_with_the_one_before(event_type):
    versions = committed_versions(COMMITTED, TOPIC_SCHEMAS[event_type].topic)
    for document in versions.values():
        assert document["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        jsonschema.Draft202012Validator.check_schema(document)
        assert document["additionalProperties"] is True
    numbers = sorted(versions)
    assert numbers == list(range(1, len(numbers) + 1))  # no version skipped
    for older, newer in zip(numbers, numbers[1:]):
        assert breaking_changes(versions[older], versions[newer]) == [], f"v{newer} breaks v{older}"


def changed(edit, schema: dict = V1) -> dict:
    new = copy.deepcopy(schema)
    edit(new)
    return new


BREAKING = {
    "sku: removed": lambda s: s["properties"].pop("sku") and s["required"].remove("sku"),
    "note: added, but older messages may hold it as an extra": lambda s: s["properties"].update(note={"type": "string"}),
    "quantity: type changed from integer to string": lambda s: s["properties"]["quantity"].update(type="string"),
    "quantity: maximum lowered from 10000 to 100": lambda s: s["properties"]["quantity"].update(maximum=100),
    "event_id: maxLength lowered from 64 to 32": lambda s: s["properties"]["event_id"].update(maxLength=32),
    "type: values narrowed": lambda s: s["properties"]["type"].update(const="stock"),
    "sku: pattern changed": lambda s: s["properties"]["sku"].update(pattern="^SKU-"),
    "extra properties were allowed and no longer are": lambda s: s.update(additionalProperties=False),
}
COMPATIBLE = {
    "a field no longer required": lambda s: s["required"].remove("warehouse_id"),
    "a type widened, a bound raised": lambda s: s["properties"]["quantity"].update(type="number", maximum=100_000),
    "a pattern dropped": lambda s: s["properties"]["sku"].pop("pattern"),
    "a description reworded": lambda s: s["properties"]["created_at"].update(description="reworded"),
}


@pytest.mark.parametrize("problem", BREAKING)
def test_an_incompatible_change_is_caught(problem):
    found = breaking_changes(V1, changed(BREAKING[problem]))
    assert any(p.startswith(problem) for p in found), found


def test_newly_requiring_a_field_is_caught():
    optional_warehouse = changed(lambda s: s["required"].remove("warehouse_id"))
    assert breaking_changes(optional_warehouse, V1) == ["warehouse_id: newly required"]


@pytest.mark.parametrize("change", COMPATIBLE)
def test_a_compatible_change_passes(change):
    assert breaking_changes(V1, changed(COMPATIBLE[change])) == []


def test_a_model_change_without_a_new_version_fails_the_check(tmp_path):
    directory = tmp_path / "schemas"
    shutil.copytree(COMMITTED, directory)
    path = directory / "inventory_orders.v1.json"
    edited = json.loads(path.read_text())
    edited["properties"]["sku"]["description"] = "something the model does not say"
    path.write_text(json.dumps(edited, indent=2) + "\n")
    assert schemas.main(["--check", "--dir", str(directory)]) == 1
    assert any("inventory_orders.v1.json differs" in p for p in problems(directory))


def test_a_new_version_must_be_compatible_and_is_written_by_the_regeneration(tmp_path, monkeypatch):
    directory = tmp_path / "schemas"
    shutil.copytree(COMMITTED, directory)
    inventory = TOPIC_SCHEMAS["inventory"]
    monkeypatch.setitem(TOPIC_SCHEMAS, "inventory", schemas.TopicSchema(inventory.topic, inventory.model, 2))
    assert schemas.main(["--dir", str(directory)]) == 0  # v2 has the v1 model: compatible
    assert (directory / "inventory_orders.v2.json").exists()
    assert (directory / "inventory_orders.v1.json").read_text() == (COMMITTED / "inventory_orders.v1.json").read_text()

    v1 = json.loads((directory / "inventory_orders.v1.json").read_text())
    v1["required"].remove("warehouse_id")  # as if v1 had not required it: v2 now newly requires it
    (directory / "inventory_orders.v1.json").write_text(json.dumps(v1))
    assert problems(directory) == ["inventory_orders.v2.json breaks v1: warehouse_id: newly required"]

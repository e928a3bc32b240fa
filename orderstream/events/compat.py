"""Backward compatibility of one schema version with the one before: a consumer on the new
version must read every message written under the old one.

Pure functions over the JSON Schema subset the models generate (an object of typed properties,
with string and number constraints, `const` and `enum`). A change is breaking when the new
version drops a property or starts to require one, changes a property's type, or narrows
what a property accepts (a tighter bound or length, fewer enum values, a new or changed
pattern or format, a closed set of properties). Adding a property is breaking too, because
extra properties are allowed: a message of the old version may already hold that name, as
an extra column of any type. A Schema Registry under BACKWARD compatibility refuses the same
changes (tests/test_registry.py); it lets a removed property and a narrowed `const` pass,
which break consumers that read those fields, so they are breaking here.
"""

from __future__ import annotations

from typing import Any

LOWER_BOUNDS = ("minimum", "exclusiveMinimum", "minLength")  # the new one may only be lower
UPPER_BOUNDS = ("maximum", "exclusiveMaximum", "maxLength")  # the new one may only be higher
EXACT = ("pattern", "format")  # the new one must be the same, or gone


def breaking_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Every reason a reader of `new` could reject a message valid under `old`; [] when compatible."""
    problems: list[str] = []
    if old.get("additionalProperties", True) is not False and new.get("additionalProperties", True) is False:
        problems.append("extra properties were allowed and no longer are")
    old_props, new_props = old.get("properties", {}), new.get("properties", {})
    for name in old_props:
        if name not in new_props:
            problems.append(f"{name}: removed")
    if old.get("additionalProperties", True) is not False:
        for name in new_props:
            if name not in old_props:
                problems.append(f"{name}: added, but older messages may hold it as an extra of any type")
    for name in sorted(set(new.get("required", ())) - set(old.get("required", ()))):
        problems.append(f"{name}: newly required")
    for name, before in old_props.items():
        if name in new_props:
            problems.extend(f"{name}: {problem}" for problem in _narrowed(before, new_props[name]))
    return problems


def _types(prop: dict[str, Any]) -> set[str]:
    kind = prop.get("type")
    if kind is None:
        return set()  # any type
    types = {kind} if isinstance(kind, str) else set(kind)
    return types | {"integer"} if "number" in types else types  # a number accepts every integer


def _values(prop: dict[str, Any]) -> list[Any] | None:
    """The values a property is limited to, or None when it is not limited to a list."""
    if "const" in prop:
        return [prop["const"]]
    return prop.get("enum")


def _narrowed(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    old_types, new_types = _types(old), _types(new)
    if new_types and (not old_types or not old_types <= new_types):
        problems.append(f"type changed from {old.get('type', 'any')} to {new['type']}")
    old_values, new_values = _values(old), _values(new)
    if new_values is not None and (old_values is None or any(v not in new_values for v in old_values)):
        problems.append(f"values narrowed from {old_values or 'any'} to {new_values}")
    for key in LOWER_BOUNDS:
        if key in new and (key not in old or new[key] > old[key]):
            problems.append(f"{key} raised from {old.get(key, 'none')} to {new[key]}")
    for key in UPPER_BOUNDS:
        if key in new and (key not in old or new[key] < old[key]):
            problems.append(f"{key} lowered from {old.get(key, 'none')} to {new[key]}")
    for key in EXACT:
        if key in new and new[key] != old.get(key):
            problems.append(f"{key} changed from {old.get(key, 'none')!r} to {new[key]!r}")
    return problems

"""The `order_events` Expectation Suite: the contract's field table (docs/contract.md section 1) as code.

Rows arrive as loaded: strings, None/NaN, or values of the wrong type. `prepare()` turns a
batch into the frame the suite runs on: the contract's fields as text (blank -> null), two
derived helper columns for rules that GX cannot express on the raw strings, and a positional
index named `_row` so that every failing row is known even when its event_id is null or bad.

Each expectation carries its human reason in `meta["reason"]` (and the contract field it
guards in `meta["field"]`); reasons are unique, so a row's list of reasons says exactly which
rules it broke. A type-specific rule names its type in `meta["applies_to"]` and is run on that
type's rows only (`suite_parts`), not through a GX row condition: that makes GX filter the
whole batch again for each such rule, a quarter of the validation time.

Great Expectations is imported only where the suite is built: importing it takes seconds.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

if TYPE_CHECKING:
    import great_expectations as gx
    from great_expectations.expectations import Expectation

SUITE_NAME = "order_events"

FIELDS = (
    "event_id",
    "order_id",
    "type",
    "created_at",
    "sku",
    "quantity",
    "warehouse_id",
    "customer_email",
    "address_line",
    "city",
    "postal_code",
    "country",
    "status",
)
ROW = "_row"  # positional index of the prepared frame; failing rows are reported by it
QUANTITY_NUMBER = "_quantity_number"  # quantity as a number (NaN if not numeric)
CREATED_AT_PARSES = "_created_at_parses"  # True/False where created_at has the ISO shape, else NA

ID_MAX_CHARS = 64
QUANTITY_MIN, QUANTITY_MAX = 1, 10_000
STATUSES = ("requested", "dispatched", "delivered", "cancelled")

# `\Z`, not `$`: Python's `$` also matches before a trailing newline ("delivery\n").
# pandas hands `\Z` to pyarrow's RE2 as `\z`, so the fast path keeps the same meaning.
TYPE_REGEX = r"^[a-z]+\Z"
INTEGER_REGEX = r"^[+-]?[0-9]+\Z"
CREATED_AT_REGEX = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]{1,9})?)?"
    r"(?:Z|[+-][0-9]{2}:[0-9]{2})\Z"
)
# The WHATWG (HTML) definition of a valid e-mail address, plus a dot in the domain.
EMAIL_REGEX = (
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+"
    r"@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+\Z"
)

CREATED_AT_RE2 = CREATED_AT_REGEX.replace(r"\Z", r"\z")

COUNTRY_CODES_FILE = Path(__file__).with_name("iso3166_alpha2.txt")


@cache
def country_codes() -> tuple[str, ...]:
    """The ISO 3166-1 alpha-2 codes committed next to this module."""
    lines = COUNTRY_CODES_FILE.read_text(encoding="utf-8").splitlines()
    return tuple(line.split()[0] for line in lines if line.strip() and not line.startswith("#"))


def _meta(field: str, reason: str, applies_to: str | None = None) -> dict:
    meta = {"field": field, "reason": reason}
    return meta if applies_to is None else {**meta, "applies_to": applies_to}


def applies_to(expectation: Expectation) -> str | None:
    """The event type whose rows the rule judges; None: every row."""
    return (expectation.meta or {}).get("applies_to")


def _required(field: str, event_type: str | None = None) -> Expectation:
    """Not null (blank counts as null, see `prepare`), for every row or for one event type."""
    import great_expectations.expectations as gxe

    if event_type is None:
        return gxe.ExpectColumnValuesToNotBeNull(column=field, meta=_meta(field, f"{field} is required"))
    return gxe.ExpectColumnValuesToNotBeNull(
        column=field, meta=_meta(field, f"{field} is required for {event_type}", event_type)
    )


def configure_common_expectations() -> list[Expectation]:
    """Rules for every row, whatever its type."""
    import great_expectations.expectations as gxe

    id_length = f"must be 1..{ID_MAX_CHARS} characters"
    return [
        _required("event_id"),
        gxe.ExpectColumnValueLengthsToBeBetween(
            column="event_id", min_value=1, max_value=ID_MAX_CHARS,
            meta=_meta("event_id", f"event_id {id_length}"),
        ),
        gxe.ExpectColumnValuesToBeUnique(
            column="event_id", meta=_meta("event_id", "event_id must be unique in the batch")
        ),
        _required("order_id"),
        gxe.ExpectColumnValueLengthsToBeBetween(
            column="order_id", min_value=1, max_value=ID_MAX_CHARS,
            meta=_meta("order_id", f"order_id {id_length}"),
        ),
        _required("type"),
        gxe.ExpectColumnValuesToMatchRegex(
            column="type", regex=TYPE_REGEX, meta=_meta("type", "type must be a lowercase word")
        ),
        _required("created_at"),
        gxe.ExpectColumnValuesToMatchRegex(
            column="created_at", regex=CREATED_AT_REGEX,
            meta=_meta("created_at", "created_at must be ISO-8601 with an offset (Z or ±hh:mm)"),
        ),
        gxe.ExpectColumnValuesToBeInSet(
            column=CREATED_AT_PARSES, value_set=[True],
            meta=_meta("created_at", "created_at must be a real date and time"),
        ),
    ]


def configure_inventory_expectations() -> list[Expectation]:
    """Rules for `inventory` rows; warehouse_id is optional (default `main`), so it has none."""
    import great_expectations.expectations as gxe

    return [
        _required("sku", "inventory"),
        _required("quantity", "inventory"),
        gxe.ExpectColumnValuesToMatchRegex(
            column="quantity", regex=INTEGER_REGEX,
            meta=_meta("quantity", "quantity must be an integer", "inventory"),
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column=QUANTITY_NUMBER, min_value=QUANTITY_MIN, max_value=QUANTITY_MAX,
            meta=_meta("quantity", f"quantity must be between {QUANTITY_MIN} and {QUANTITY_MAX}", "inventory"),
        ),
    ]


def configure_delivery_expectations() -> list[Expectation]:
    """Rules for `delivery` rows; a missing status means `requested`, so only set values are checked."""
    import great_expectations.expectations as gxe

    return [
        _required("customer_email", "delivery"),
        gxe.ExpectColumnValuesToMatchRegex(
            column="customer_email", regex=EMAIL_REGEX,
            meta=_meta("customer_email", "customer_email must be a valid email address", "delivery"),
        ),
        _required("address_line", "delivery"),
        _required("city", "delivery"),
        _required("postal_code", "delivery"),
        _required("country", "delivery"),
        gxe.ExpectColumnValuesToBeInSet(
            column="country", value_set=list(country_codes()),
            meta=_meta("country", "country must be an ISO 3166-1 alpha-2 code", "delivery"),
        ),
        gxe.ExpectColumnValuesToBeInSet(
            column="status", value_set=list(STATUSES),
            meta=_meta("status", f"status must be one of {', '.join(STATUSES)}", "delivery"),
        ),
    ]


def build_order_events_suite() -> gx.ExpectationSuite:
    """The suite, not yet attached to any context."""
    import great_expectations as gx

    return gx.ExpectationSuite(
        name=SUITE_NAME,
        expectations=[
            *configure_common_expectations(),
            *configure_inventory_expectations(),
            *configure_delivery_expectations(),
        ],
    )


def suite_parts() -> list[tuple[str | None, gx.ExpectationSuite]]:
    """The suite split by `applies_to`, in suite order: (None, the rules for every row), then
    one part per event type; each part is a suite of its own, named after the whole."""
    import great_expectations as gx

    parts: dict[str | None, list[Expectation]] = {}
    for expectation in build_order_events_suite().expectations:
        parts.setdefault(applies_to(expectation), []).append(expectation)
    return [
        (event_type, gx.ExpectationSuite(name=f"{SUITE_NAME}.{event_type or 'all'}", expectations=rules))
        for event_type, rules in parts.items()
    ]


def configure_order_events(context) -> gx.ExpectationSuite:
    """Add (or replace) the suite in `context` and return the stored copy."""
    return context.suites.add_or_update(build_order_events_suite())


# pandas' own `str` dtype (Arrow-backed, NaN for null), built straight from Arrow arrays.
TEXT = pd.StringDtype("pyarrow", na_value=np.nan)


def _as_text(values: pd.Series):
    """Values as strings; None, NaN and blank strings become null.

    The same as `text.where(text.str.strip() != "")`, computed with Arrow's kernels directly:
    pandas' per-operation overhead was most of the cost of a small batch.
    """
    if values.dtype == object and pd.api.types.infer_dtype(values, skipna=True) in ("string", "empty"):
        # Only strings and nulls, as the loader gives them: astype("str") would change nothing.
        text = pa.array(values.to_numpy(), type=pa.large_string(), from_pandas=True)
    else:
        text = pa.array(values.astype("str").array)
    blank = pc.equal(pc.utf8_trim_whitespace(text), "")
    # pandas-stubs do not know pandas 3's `dtype` argument (na_value=NaN is pandas' own `str` dtype).
    return pd.arrays.ArrowStringArray(pc.if_else(blank, pa.scalar(None, text.type), text), dtype=TEXT)  # type: ignore[call-arg]


def prepare(df: pd.DataFrame) -> pd.DataFrame:
    """The frame the suite validates: one row per input row, in order, indexed by position.

    Built in one go from its columns (each assignment to a frame costs pandas more than the
    column's values do on a small batch).
    """
    index = pd.RangeIndex(len(df), name=ROW)
    missing = pd.Series(None, index=df.index, dtype="str")  # a missing column is a column of nulls
    text = {field: _as_text(df[field] if field in df.columns else missing) for field in FIELDS}
    quantity = pd.to_numeric(pd.Series(text["quantity"], index=index), errors="coerce")
    # Only strings of the ISO shape are parsed; the rest already fail the shape rule. The shape is
    # pandas' str.contains computed as pandas computes it, with Arrow's RE2 (`\Z` spelled `\z`).
    created_at = pd.Series(text["created_at"], index=index)
    shaped = pc.match_substring_regex(pa.array(text["created_at"]), CREATED_AT_RE2).fill_null(False).to_numpy(
        zero_copy_only=False
    )
    parsed = pd.to_datetime(created_at.where(shaped), format="ISO8601", utc=True, errors="coerce")
    # pandas-stubs types astype("boolean") as Series[bool], whose `where` would not take pd.NA.
    parses = parsed.notna().astype("boolean").where(shaped, pd.NA)  # type: ignore[call-overload]
    return pd.DataFrame({**text, QUANTITY_NUMBER: quantity, CREATED_AT_PARSES: parses}, index=index)

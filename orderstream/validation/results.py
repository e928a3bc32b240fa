"""The result format the suite is run with, and how to read the failing rows out of a result."""

from __future__ import annotations

from expectations.order_events import ROW

# COMPLETE lists every failing row. With the positional index named `_row` and
# exclude_unexpected_values, GX returns the positions as one plain list; asking for the values
# (or for an index *column* such as event_id) makes GX walk the failing rows one by one in
# Python, about 10x slower on a batch with many failures.
RESULT_FORMAT = {
    "result_format": "COMPLETE",
    "unexpected_index_column_names": [ROW],
    "exclude_unexpected_values": True,
    "return_unexpected_index_query": False,
}


def failing_rows(result: dict) -> list[int]:
    # exclude_unexpected_values gives [{"_row": [positions...]}]
    lists = result.get("unexpected_index_list") or []
    return [row for entry in lists for row in entry.get(ROW, [])]

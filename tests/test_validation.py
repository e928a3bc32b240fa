"""The `order_events` suite and validate_events: every rule of docs/contract.md section 1, by its reason."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pandas as pd
import pytest
from prometheus_client import REGISTRY

from expectations.order_events import build_order_events_suite, country_codes
from orderstream.validation import gx_suite
from orderstream.validation import suite as validate_module
from orderstream.validation.docs import build_data_docs
from orderstream.validation.suite import validate_events
from tasks.produce import publish_validation_artifact

pytestmark = pytest.mark.unit

EMPTY = dict.fromkeys(
    ("sku", "quantity", "warehouse_id", "customer_email", "address_line", "city", "postal_code", "country", "status")
)
COMMON = {"order_id": "ord-1", "created_at": "2024-05-01T12:34:56+02:00", "extra": None}
INVENTORY = {**EMPTY, **COMMON, "type": "inventory", "sku": "SKU-1", "quantity": "3", "warehouse_id": "w1"}
DELIVERY = {
    **EMPTY,
    **COMMON,
    "type": "delivery",
    "customer_email": "jane.doe@example.com",
    "address_line": "1 Main St",
    "city": "Berlin",
    "postal_code": "10115",
    "country": "DE",
    "status": "dispatched",
}
PAYMENT = {**EMPTY, **COMMON, "type": "payment"}


def frame(*rows: dict) -> pd.DataFrame:
    """Rows as the repository hands them over: object columns, event ids e1, e2, ... unless given."""
    records = [{"event_id": f"e{i}", **row} for i, row in enumerate(rows, start=1)]
    return pd.DataFrame(records, dtype=object)


def reasons_of(row: dict) -> list[str]:
    """The reasons one row (next to a valid one, so the batch is mixed) is rejected with."""
    outcome = validate_events(frame(row, INVENTORY))
    assert 1 in outcome.valid.index  # the valid neighbour is unaffected
    return outcome.rejected["reasons"].get(0, [])


INVALID: list[tuple[dict, list[str]]] = [
    # event_id, order_id
    ({**PAYMENT, "event_id": None}, ["event_id is required"]),
    ({**PAYMENT, "event_id": ""}, ["event_id is required"]),
    ({**PAYMENT, "event_id": "x" * 65}, ["event_id must be 1..64 characters"]),
    ({**PAYMENT, "order_id": None}, ["order_id is required"]),
    ({**PAYMENT, "order_id": "o" * 65}, ["order_id must be 1..64 characters"]),
    # type
    ({**PAYMENT, "type": None}, ["type is required"]),
    ({**PAYMENT, "type": ""}, ["type is required"]),
    ({**INVENTORY, "type": "Inventory"}, ["type must be a lowercase word"]),
    ({**DELIVERY, "type": " delivery"}, ["type must be a lowercase word"]),
    ({**DELIVERY, "type": "delivery\n"}, ["type must be a lowercase word"]),
    ({**PAYMENT, "type": "pay-ment"}, ["type must be a lowercase word"]),
    # created_at
    ({**PAYMENT, "created_at": None}, ["created_at is required"]),
    ({**PAYMENT, "created_at": "yesterday"}, ["created_at must be ISO-8601 with an offset (Z or ±hh:mm)"]),
    ({**PAYMENT, "created_at": "2024-05-01T12:34:56"}, ["created_at must be ISO-8601 with an offset (Z or ±hh:mm)"]),
    ({**PAYMENT, "created_at": "2024-02-30T10:00:00Z"}, ["created_at must be a real date and time"]),
    ({**PAYMENT, "created_at": "2024-05-01T25:00:00+01:00"}, ["created_at must be a real date and time"]),
    # inventory
    ({**INVENTORY, "sku": None}, ["sku is required for inventory"]),
    ({**INVENTORY, "quantity": None}, ["quantity is required for inventory"]),
    ({**INVENTORY, "quantity": "abc"}, ["quantity must be an integer"]),
    ({**INVENTORY, "quantity": "2.5"}, ["quantity must be an integer"]),
    ({**INVENTORY, "quantity": "0"}, ["quantity must be between 1 and 10000"]),
    ({**INVENTORY, "quantity": "10001"}, ["quantity must be between 1 and 10000"]),
    # delivery
    ({**DELIVERY, "customer_email": None}, ["customer_email is required for delivery"]),
    ({**DELIVERY, "customer_email": "jane.doe"}, ["customer_email must be a valid email address"]),
    ({**DELIVERY, "customer_email": "jane@doe"}, ["customer_email must be a valid email address"]),
    ({**DELIVERY, "customer_email": "jane doe@example.com"}, ["customer_email must be a valid email address"]),
    ({**DELIVERY, "address_line": None}, ["address_line is required for delivery"]),
    ({**DELIVERY, "city": "  "}, ["city is required for delivery"]),
    ({**DELIVERY, "postal_code": None}, ["postal_code is required for delivery"]),
    ({**DELIVERY, "country": None}, ["country is required for delivery"]),
    ({**DELIVERY, "country": "XX"}, ["country must be an ISO 3166-1 alpha-2 code"]),
    ({**DELIVERY, "country": "de"}, ["country must be an ISO 3166-1 alpha-2 code"]),
    ({**DELIVERY, "country": "DEU"}, ["country must be an ISO 3166-1 alpha-2 code"]),
    ({**DELIVERY, "status": "lost"}, ["status must be one of requested, dispatched, delivered, cancelled"]),
    ({**DELIVERY, "status": "Delivered"}, ["status must be one of requested, dispatched, delivered, cancelled"]),
]
VALID: list[dict] = [
    INVENTORY,
    {**INVENTORY, "warehouse_id": None, "quantity": "10000"},
    {**INVENTORY, "quantity": "1", "created_at": "2024-05-01T12:34Z"},
    DELIVERY,
    {**DELIVERY, "status": None},
    {**DELIVERY, "status": "cancelled", "country": "GB", "created_at": "2024-05-01 12:34:56.123456-05:30"},
    PAYMENT,
    {**PAYMENT, "type": "refund"},
    # type-specific fields on another type are not judged
    {**PAYMENT, "quantity": "abc", "country": "XX", "status": "lost"},
    {**INVENTORY, "status": "lost", "customer_email": "nope"},
]


def _case_id(value) -> str:
    """Test ids: the case's first reason (the index alone says nothing)."""
    return value[0] if isinstance(value, list) else str(value)


@pytest.fixture(scope="module")
def judged():
    """Every case of INVALID and VALID in one mixed batch (row i is case i): one GX run for all."""
    return validate_events(frame(*(row for row, _ in INVALID), *VALID))


@pytest.mark.parametrize(("case", "expected"), [(i, e) for i, (_, e) in enumerate(INVALID)], ids=_case_id)
def test_each_invalid_kind_is_rejected_with_its_reason(judged, case: int, expected: list[str]) -> None:
    assert judged.rejected["reasons"].get(case) == expected


@pytest.mark.parametrize("case", range(len(INVALID), len(INVALID) + len(VALID)))
def test_valid_rows_pass(judged, case: int) -> None:
    assert case in judged.valid.index and case not in judged.rejected.index


def test_a_row_with_several_faults_gets_every_reason_in_suite_order() -> None:
    row = {**DELIVERY, "created_at": "yesterday", "customer_email": "nope", "country": "XX", "city": None}
    assert reasons_of(row) == [
        "created_at must be ISO-8601 with an offset (Z or ±hh:mm)",
        "customer_email must be a valid email address",
        "city is required for delivery",
        "country must be an ISO 3166-1 alpha-2 code",
    ]
    inventory = {**INVENTORY, "event_id": None, "quantity": "0"}
    assert reasons_of(inventory) == ["event_id is required", "quantity must be between 1 and 10000"]


def test_duplicate_event_ids_in_one_batch_are_both_rejected() -> None:
    outcome = validate_events(frame({**PAYMENT, "event_id": "same"}, {**PAYMENT, "event_id": "same"}, PAYMENT))
    assert list(outcome.valid["event_id"]) == ["e3"]
    assert outcome.rejected["reasons"].tolist() == [["event_id must be unique in the batch"]] * 2


def test_rows_without_a_usable_event_id_are_still_rejected_by_position() -> None:
    df = frame({**PAYMENT, "event_id": None}, INVENTORY, {**PAYMENT, "event_id": "x" * 65}, {**PAYMENT, "event_id": None})
    df.index = [10, 11, 12, 13]
    outcome = validate_events(df)
    assert outcome.valid.index.tolist() == [11]
    assert outcome.rejected.index.tolist() == [10, 12, 13]
    assert outcome.rejected["reasons"].tolist() == [
        ["event_id is required"],
        ["event_id must be 1..64 characters"],
        ["event_id is required"],
    ]


def test_outputs_keep_the_input_columns_and_index_and_ignore_extra_fields() -> None:
    df = frame(
        {**INVENTORY, "extra": json.dumps({"gift": True}), "id": 7, "gift_wrap": "yes"},
        {**DELIVERY, "extra": "not even json", "id": 8, "gift_wrap": None},
        {**DELIVERY, "country": "XX", "id": 9, "gift_wrap": None},
    )
    df.index = [100, 200, 300]
    outcome = validate_events(df)
    assert list(outcome.valid.columns) == list(df.columns)
    assert outcome.valid.index.tolist() == [100, 200]
    assert outcome.valid.equals(df.loc[[100, 200]])
    assert list(outcome.rejected.columns) == [*df.columns, "reasons"]
    assert outcome.rejected["id"].tolist() == [9]


def test_missing_optional_columns_count_as_null() -> None:
    df = frame(INVENTORY, DELIVERY).drop(columns=["warehouse_id", "status", "extra"])
    outcome = validate_events(df)
    assert len(outcome.valid) == 2 and outcome.rejected.empty


def test_values_of_the_wrong_type_are_judged_as_text() -> None:
    outcome = validate_events(
        frame({**INVENTORY, "quantity": 5}, {**INVENTORY, "quantity": 2.5}, {**INVENTORY, "quantity": float("nan")})
    )
    assert list(outcome.valid["event_id"]) == ["e1"]
    assert outcome.rejected["reasons"].tolist() == [["quantity must be an integer"], ["quantity is required for inventory"]]


def test_a_fully_bad_batch_gives_no_valid_rows_and_no_exception() -> None:
    bad = [{**INVENTORY, "type": "Inventory"}, {**DELIVERY, "created_at": "yesterday"}, {**PAYMENT, "order_id": None}]
    outcome = validate_events(frame(*bad * 10))
    assert outcome.valid.empty
    assert list(outcome.valid.columns) == list(frame(*bad).columns)
    assert len(outcome.rejected) == 30
    assert outcome.summary()["rows"] == {"evaluated": 30, "valid": 0, "rejected": 30}


def test_an_empty_batch_is_an_empty_outcome() -> None:
    outcome = validate_events(frame(INVENTORY).iloc[0:0])
    assert outcome.valid.empty and outcome.rejected.empty
    assert outcome.summary()["rows"] == {"evaluated": 0, "valid": 0, "rejected": 0}


def test_summary_counts_per_expectation_and_is_json() -> None:
    outcome = validate_events(frame(INVENTORY, {**INVENTORY, "quantity": "0"}, DELIVERY, PAYMENT))
    summary = json.loads(json.dumps(outcome.summary()))
    assert summary["rows"] == {"evaluated": 4, "valid": 3, "rejected": 1}
    by_reason = {e["reason"]: e for e in summary["expectations"]}
    assert len(by_reason) == len(build_order_events_suite().expectations)
    assert by_reason["quantity must be between 1 and 10000"] == {
        "expectation": "expect_column_values_to_be_between",
        "column": "quantity",
        "reason": "quantity must be between 1 and 10000",
        "evaluated": 2,
        "unexpected": 1,
        "success": False,
    }
    assert by_reason["event_id is required"]["evaluated"] == 4
    assert by_reason["city is required for delivery"]["evaluated"] == 1
    assert by_reason["status must be one of requested, dispatched, delivered, cancelled"]["success"] is True


def test_every_expectation_has_a_unique_human_reason() -> None:
    reasons = [e.meta["reason"] for e in build_order_events_suite().expectations]
    assert all(reasons) and len(set(reasons)) == len(reasons)
    assert len(country_codes()) == 249 and {"DE", "GB", "US", "SS", "CW"} <= set(country_codes())


def test_kept_results_build_data_docs(tmp_path) -> None:
    zero = {**INVENTORY, "event_id": "evt-zero-quantity", "quantity": "0"}
    validate_events(frame(INVENTORY, zero), docs_dir=tmp_path, batch_id="batch-a")
    validate_events(frame(DELIVERY), docs_dir=tmp_path, batch_id="batch-b")
    index = build_data_docs(tmp_path)
    assert index == tmp_path / "uncommitted" / "data_docs" / "local_site" / "index.html"
    assert index.is_file()
    pages = {p.stem for p in index.parent.glob("validations/order_events/*/*/*.html")}
    assert pages == {"batch-a", "batch-b"}
    page = next(index.parent.glob("validations/order_events/batch-a/*/batch-a.html")).read_text()
    assert "evt-zero-quantity" in page  # the failing row is sampled by its event id


def test_artifact_is_a_no_op_outside_a_run(monkeypatch) -> None:
    monkeypatch.setattr("prefect.artifacts.create_table_artifact", pytest.fail)
    assert publish_validation_artifact(validate_events(frame(INVENTORY)), "b1") is None


def test_artifact_counts_pass_and_fail_per_expectation_in_a_run(monkeypatch) -> None:
    created: list[dict] = []
    monkeypatch.setattr("prefect.context.FlowRunContext.get", classmethod(lambda cls: SimpleNamespace()))
    monkeypatch.setattr("prefect.artifacts.create_table_artifact", lambda **kw: created.append(kw))
    outcome = validate_events(frame(INVENTORY, {**INVENTORY, "sku": None}))
    publish_validation_artifact(outcome, "b1")
    (artifact,) = created
    assert artifact["key"] == "order-events-validation"
    row = next(r for r in artifact["table"] if r["reason"] == "sku is required for inventory")
    assert row == {"reason": "sku is required for inventory", "column": "sku", "evaluated": 2, "failed": 1, "passed": 1}


def test_an_expectation_gx_could_not_evaluate_fails_the_batch(monkeypatch) -> None:
    real = validate_module.prepare
    monkeypatch.setattr(validate_module, "prepare", lambda df: real(df).drop(columns=["city"]))
    with pytest.raises(validate_module.ValidationFailed, match="city is required for delivery"):
        validate_events(frame(INVENTORY, DELIVERY))


def test_the_gx_context_is_built_once_per_process() -> None:
    validate_events(frame(INVENTORY))
    validate_events(frame(DELIVERY))
    assert gx_suite._validator.cache_info().misses <= 1


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_gx_checks_every_batch_and_agrees_with_the_evaluator() -> None:
    checked = _metric("orderstream_validation_gx_checked_total")
    validate_events(frame(*(row for row, _ in INVALID), *VALID))
    assert _metric("orderstream_validation_gx_checked_total") == checked + 1
    for reason in [e.meta["reason"] for e in build_order_events_suite().expectations]:
        assert _metric("orderstream_validation_disagreements_total", reason=reason) == 0


def test_a_disagreement_with_gx_is_counted_and_logged(monkeypatch, caplog) -> None:
    """The evaluator decides; should GX see it otherwise, the metric and the log say so."""
    real = validate_module.evaluate

    def lenient(frame, rules, gx):  # an evaluator that lets every quantity through
        judgement = real(frame, rules, gx)
        between = [s.reason for s in judgement.stats].index("quantity must be between 1 and 10000")
        judgement.failing[between] = judgement.failing[between][:0]
        return judgement

    monkeypatch.setattr(validate_module, "evaluate", lenient)
    reason = "quantity must be between 1 and 10000"
    before = _metric("orderstream_validation_disagreements_total", reason=reason)
    outcome = validate_events(frame(INVENTORY, {**INVENTORY, "quantity": "0"}), batch_id="b-lenient")
    assert len(outcome.valid) == 2  # the evaluator's verdict stands
    assert _metric("orderstream_validation_disagreements_total", reason=reason) == before + 1
    assert any("b-lenient" in r.message and reason in r.message for r in caplog.records if r.levelname == "ERROR")


@pytest.mark.unit
def test_text_preparation_is_pandas_strip_and_where_computed_with_arrow() -> None:
    """`_as_text` computes `text.where(text.str.strip() != "")` with Arrow's kernels: same values, same dtype."""
    import numpy as np
    from hypothesis import given
    from hypothesis import strategies as st

    from expectations.order_events import _as_text

    cells = st.one_of(st.none(), st.just(np.nan), st.just(pd.NA), st.text(max_size=6),
                      st.sampled_from([" ", "\t\n", "\u00a0", "\u3000 x"]), st.integers(), st.floats(allow_nan=False),
                      st.booleans())

    @given(st.lists(cells, max_size=30))
    def same(values: list) -> None:
        series = pd.Series(values, dtype=object)
        text = series.astype("str")
        expected = text.where(text.str.strip() != "").array
        got = _as_text(series)
        assert got.dtype == expected.dtype and got.equals(expected), (values, list(got), list(expected))

    same()

"""The evaluator gives GX's verdicts row for row: property-based differential tests against GX itself.

Hostile frames (nulls, blanks, whitespace, unicode, huge values, wrong types, numeric strings, bad
timestamps and e-mails, every event type, missing columns) go through `prepare` and then through
both the evaluator and GX; every rule's failing rows and stat must be the same. Beyond the
suite's own kwargs, random configurations of every expectation type the evaluator implements
are compared too, a type it does not implement is judged by GX on the hot path, and a GX run over
several batches cut back per batch equals GX's run of each batch alone.
"""

from __future__ import annotations

import datetime as dt
import string

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from expectations.order_events import FIELDS, STATUSES, country_codes, prepare
from orderstream.validation import evaluator
from orderstream.validation.evaluator import Rule, evaluate, re2_spelling, rules_of, supported
from orderstream.validation.gx_check import CheckJob, groups, split_results
from orderstream.validation.gx_suite import judgement_of, run_rules, run_suite, suite_configs
from orderstream.validation.verdicts import Judgement, ValidationFailed, disagreements

pytestmark = pytest.mark.unit

# One GX run costs ~0.2 s: examples carry many rows each, and their number is kept small.
EXAMPLES = settings(
    max_examples=30, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
RULES = rules_of(suite_configs())
REASONS = [rule.reason for rule in RULES]

# --- hostile values ----------------------------------------------------------------------------------

BLANKS = ["", " ", "  ", "\t", "\n", "\r\n", "\u00a0", "\u2003", "\u200b", "\ufeff", "\x00", "\x0b"]
NOISE = ["NULL", "None", "nan", "NaN", "N/A", "null", "-", "é", "日本語", "😀", "\u202e", "a\u0301", "Ω", "ß", "İ"]
OBJECTS = [None, float("nan"), pd.NA, True, False, 0, -1, 5, 2.5, -0.0, float("inf"), float("-inf"), 10**30, -(10**30),
           b"bytes", dt.date(2024, 5, 1)]
hostile = st.one_of(
    st.sampled_from(BLANKS + NOISE + OBJECTS),
    st.text(max_size=6),
    st.integers(min_value=60, max_value=70).map(lambda n: "x" * n),
    st.integers(min_value=-(10**25), max_value=10**25),
    st.floats(allow_nan=True, allow_infinity=True),
)


def _padded(values: st.SearchStrategy) -> st.SearchStrategy:
    """A value, strings with whitespace or unicode around them."""
    pad = st.sampled_from(["", " ", "\n", "\t", "\u00a0", "é"])
    return st.tuples(pad, values, pad).map(lambda t: t[0] + t[1] + t[2] if isinstance(t[1], str) else t[1])


def _field(good: st.SearchStrategy, *near: str) -> st.SearchStrategy:
    """Mostly plausible values of a field, some padded, some known edge cases, some hostile."""
    return st.one_of(good, good, _padded(good), st.sampled_from(near) if near else st.nothing(), hostile)


ids = st.one_of(st.sampled_from(["e1", "e2", "e3", "é" * 64, "é" * 65, "x" * 64, "x" * 65]), st.text(min_size=1, max_size=8))
event_types = st.sampled_from(["inventory", "delivery", "payment", "refund", "Inventory", "INVENTORY", "pay-ment", "ïnventory"])
digits2 = st.integers(min_value=0, max_value=99).map("{:02d}".format)
created_at = st.builds(
    lambda year, month, day, sep, hour, minute, seconds, offset: f"{year:04d}-{month}-{day}{sep}{hour}:{minute}{seconds}{offset}",
    st.integers(min_value=0, max_value=9999),
    st.sampled_from(["01", "02", "05", "12", "13", "00"]),
    st.sampled_from(["01", "28", "29", "30", "31", "32", "00"]),
    st.sampled_from(["T", " ", "t", "_"]),
    st.sampled_from(["00", "12", "23", "24", "25"]),
    st.sampled_from(["00", "34", "59", "60"]),
    st.one_of(st.just(""), digits2.map(":{}".format),
              st.tuples(digits2, st.integers(min_value=1, max_value=10)).map(lambda t: f":{t[0]}." + "7" * t[1])),
    st.sampled_from(["Z", "z", "+02:00", "-05:30", "+14:00", "+99:99", "+0200", "", " Z", "Z\n"]),
)
timestamps = st.one_of(created_at, st.datetimes(timezones=st.just(dt.UTC)), st.datetimes())
quantities = st.one_of(
    st.integers(min_value=-5, max_value=20_000).map(str),
    st.sampled_from(["+3", "-0", "+0", " 5", "5 ", "５", "٣", "1e3", "2.5", "0x10", "1_000", "9" * 25,
                     "18446744073709551615", "9223372036854775808", "-9223372036854775809", "10000", "10001", "1", "0"]),
    st.integers(min_value=-5, max_value=20_000),
)
labels = st.text(alphabet=string.ascii_lowercase + string.digits + "-", min_size=1, max_size=64)
emails = st.builds(
    lambda local, domain, tld: f"{local}@{domain}.{tld}",
    st.text(alphabet=string.ascii_letters + string.digits + ".!#$%&'*+/=?^_`{|}~- é@", min_size=0, max_size=10),
    labels,
    st.one_of(labels, st.just("")),
)
countries = st.one_of(st.sampled_from(list(country_codes())), st.sampled_from(["de", "DEU", "XX", "D", "GB "]))
statuses = st.one_of(st.sampled_from(list(STATUSES)), st.sampled_from(["lost", "Delivered", "requested ", "scheduled"]))
texts = st.text(max_size=12)

FIELD_VALUES = {
    "event_id": _field(ids),
    "order_id": _field(ids),
    "type": _field(event_types, "inventory", "delivery"),
    "created_at": _field(timestamps, "2024-05-01T12:34:56+02:00", "2024-02-30T10:00:00Z"),
    "sku": _field(texts),
    "quantity": _field(quantities),
    "warehouse_id": _field(texts),
    "customer_email": _field(emails, "jane.doe@example.com", "jane@doe", "a@b.c"),
    "address_line": _field(texts),
    "city": _field(texts),
    "postal_code": _field(texts),
    "country": _field(countries, "DE"),
    "status": _field(statuses),
}


@st.composite
def rows(draw, event_type: str | None = None) -> dict:
    row = {name: draw(values) for name, values in FIELD_VALUES.items()}
    if event_type is not None:
        row["type"] = event_type
    return row


@st.composite
def hostile_frames(draw, max_rows: int = 60) -> pd.DataFrame:
    """Rows as the repository hands them over (object columns), every event type, some columns missing."""
    drawn = draw(st.lists(st.one_of(rows(), rows("inventory"), rows("delivery")), max_size=max_rows))
    frame = pd.DataFrame(drawn, columns=list(FIELDS), dtype=object)
    missing = draw(st.sets(st.sampled_from(FIELDS), max_size=3))
    return frame.drop(columns=sorted(missing))


# --- the two judges --------------------------------------------------------------------------------


def _no_gx(frame: pd.DataFrame, rules: tuple[Rule, ...]) -> Judgement:
    raise AssertionError(f"the evaluator handed {[r.type for r in rules]} to GX")


def judged_by_evaluator(frame: pd.DataFrame, rules: tuple[Rule, ...] = RULES) -> Judgement | str:
    try:
        return evaluate(frame, rules, _no_gx)
    except ValidationFailed as exc:
        return f"failed: {str(exc).split(':')[0]}"


def judged_by_gx(frame: pd.DataFrame, rules: tuple[Rule, ...] | None = None) -> Judgement | str:
    try:
        if rules is None:
            return judgement_of(*run_suite(frame), REASONS)
        return run_rules(frame, rules)
    except ValidationFailed as exc:
        return f"failed: {str(exc).split(':')[0]}"


def assert_same(ours: Judgement | str, theirs: Judgement | str) -> None:
    if isinstance(ours, str) or isinstance(theirs, str):
        assert ours == theirs  # both could not evaluate the same rule
        return
    assert disagreements(ours, theirs) == []
    assert ours.stats == theirs.stats
    assert [rows.tolist() for rows in ours.failing] == [rows.tolist() for rows in theirs.failing]


# --- the suite's rules on hostile frames -----------------------------------------------------------


@EXAMPLES
@given(hostile_frames())
def test_the_evaluator_judges_hostile_frames_as_gx_does_row_for_row(raw: pd.DataFrame) -> None:
    frame = prepare(raw)
    assert_same(judged_by_evaluator(frame), judged_by_gx(frame))


def test_the_suites_patterns_run_on_arrow_and_those_pandas_may_give_to_python_stay_with_pandas() -> None:
    """The evaluator calls Arrow's RE2 itself only where pandas would, whatever the data."""
    patterns = [rule.kwargs["regex"] for rule in rules_of(suite_configs()) if "regex" in rule.kwargs]
    assert patterns and all(re2_spelling(p) is not None for p in patterns)
    assert re2_spelling(r"^[a-z]+\Z") == r"^[a-z]+\z" and re2_spelling(r"[$]\.") == r"[$]\."
    for python_maybe in (r"^\d+\Z", r"\s", r"\w", r"\bx", r"^a$", r"(?=x)x", r"(a)\1", r"(?i)abc", r"\\Z", r"[\Z]",
                         r"[]a]", r"\u00e9", r"(?P<n>a)"):
        assert re2_spelling(python_maybe) is None, python_maybe


def test_the_suite_uses_only_types_the_evaluator_implements() -> None:
    assert all(supported(rule) for rule in RULES)
    assert {rule.type for rule in RULES} <= set(evaluator.IMPLEMENTED)


def test_every_kind_of_failure_of_the_suite_is_found_by_both() -> None:
    """A fixed frame that breaks every rule at least once: the differential test's floor."""
    bad = [
        {"event_id": None, "order_id": "o" * 65, "type": "Inventory", "created_at": "yesterday"},
        {"event_id": "dup", "order_id": None, "type": None, "created_at": None},
        {"event_id": "dup", "order_id": "o", "type": "inventory", "created_at": "2024-02-30T10:00:00Z",
         "sku": None, "quantity": None},
        {"event_id": "x" * 65, "order_id": "o", "type": "inventory", "created_at": "2024-05-01T12:34Z", "sku": "s",
         "quantity": "2.5"},
        {"event_id": "q0", "order_id": "o", "type": "inventory", "created_at": "2024-05-01T12:34Z", "sku": "s", "quantity": "0"},
        {"event_id": "d1", "order_id": "o", "type": "delivery", "created_at": "2024-05-01T12:34Z", "customer_email": "jane@doe",
         "address_line": None, "city": None, "postal_code": None, "country": "XX", "status": "lost"},
        {"event_id": "d2", "order_id": "o", "type": "delivery", "created_at": "2024-05-01T12:34Z"},
    ]
    frame = prepare(pd.DataFrame(bad, columns=list(FIELDS), dtype=object))
    ours, theirs = judged_by_evaluator(frame), judged_by_gx(frame)
    assert_same(ours, theirs)
    assert isinstance(ours, Judgement)
    assert all(stat.unexpected > 0 for stat in ours.stats), [s.reason for s in ours.stats if not s.unexpected]


# --- every implemented type, with kwargs beyond the suite's -----------------------------------------

GENERIC_COLUMNS = ("text", "number", "flag")
regexes = st.sampled_from([  # RE2 and Python's re (pandas picks one by the pattern), anchors, unicode classes
    r"^[a-z]+\Z", r"^[a-z]+$", r"[0-9]", r"^\d+\Z", r"^\w+\Z", r"(?i)^abc", r"^(a|b)\1", r"^(?=x)x", r"é", r"\s", r"^$",
    r"^.{3}$",
])
value_sets = st.lists(st.one_of(st.sampled_from(["a", "b", "", " ", "é", "1", "True"]), st.integers(-2, 2), st.booleans(),
                                st.none(), st.floats(allow_nan=True)), max_size=5)
bounds = st.one_of(st.none(), st.integers(min_value=-3, max_value=12))
number_bounds = st.one_of(st.none(), st.integers(min_value=-3, max_value=12), st.floats(min_value=-3, max_value=12))
flags = st.booleans()
mostly = st.sampled_from([None, 1, 0.5, 0.9, 0.0])


@st.composite
def generic_configs(draw) -> list[dict]:
    """One configuration of every implemented type, its kwargs drawn, on the generic columns."""
    def config(index: int, expectation_type: str, column: str, **kwargs) -> dict:
        share = draw(mostly)
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        if share is not None:
            kwargs["mostly"] = share
        applies = draw(st.sampled_from([None, "inventory", "delivery"]))
        meta = {"field": column, "reason": f"rule {index}", **({"applies_to": applies} if applies else {})}
        return {"type": expectation_type, "kwargs": {"column": column, **kwargs}, "meta": meta}

    def ordered(low, high):
        return (high, low) if low is not None and high is not None and low > high else (low, high)

    low, high = ordered(draw(bounds), draw(bounds))
    if low is None and high is None:
        high = 5
    length_min = max(low, 0) if low is not None else None
    length_max = max(high, 0) if high is not None else None
    if length_min is not None and length_max is not None and length_min > length_max:
        length_min = length_max
    number_low, number_high = ordered(draw(number_bounds), draw(number_bounds))
    if number_low is None and number_high is None:
        number_low = 0
    column = draw(st.sampled_from(GENERIC_COLUMNS))
    return [
        config(0, "expect_column_values_to_not_be_null", column),
        config(1, "expect_column_value_lengths_to_be_between", "text", min_value=length_min, max_value=length_max,
               strict_min=draw(flags) or None, strict_max=draw(flags) or None),
        config(2, "expect_column_values_to_be_unique", column),
        config(3, "expect_column_values_to_match_regex", "text", regex=draw(regexes)),
        config(4, "expect_column_values_to_be_in_set", draw(st.sampled_from(GENERIC_COLUMNS)), value_set=draw(value_sets)),
        config(5, "expect_column_values_to_be_between", "number", min_value=number_low, max_value=number_high,
               strict_min=draw(flags) or None, strict_max=draw(flags) or None),
    ]


number_columns = st.one_of(
    st.lists(st.one_of(st.integers(-5, 15), st.none()), max_size=30).map(lambda v: pd.Series(v, dtype="float64")),
    st.lists(st.integers(-5, 15), max_size=30).map(lambda v: pd.Series(v, dtype="int64")),
    st.lists(st.integers(0, 2**64 - 1), max_size=30).map(lambda v: pd.Series(v, dtype="uint64")),
    st.lists(st.one_of(st.booleans(), st.none()), max_size=30).map(lambda v: pd.Series(v, dtype="boolean")),
    st.lists(st.one_of(st.integers(-5, 15), st.floats(allow_nan=True), st.none()), max_size=30)
    .map(lambda v: pd.Series(v, dtype=object)),
)


@st.composite
def generic_frames(draw) -> pd.DataFrame:
    numbers = draw(number_columns).reset_index(drop=True)
    size = len(numbers)
    text = st.one_of(st.text(max_size=8), st.sampled_from(["a", "b", "abc", "aab", "x", "é", "٣", "12"]), st.none())
    frame = pd.DataFrame({
        "type": pd.Series(draw(st.lists(st.sampled_from(["inventory", "delivery", None]), min_size=size, max_size=size)),
                          dtype="str"),
        "text": pd.Series(draw(st.lists(text, min_size=size, max_size=size)), dtype="str"),
        "number": numbers,
        "flag": pd.Series(draw(st.lists(st.one_of(st.booleans(), st.none()), min_size=size, max_size=size)), dtype="boolean"),
    })
    frame.index = pd.RangeIndex(size, name="_row")
    return frame


@EXAMPLES
@given(generic_configs(), generic_frames())
def test_every_implemented_type_matches_gx_with_random_kwargs(configs: list[dict], frame: pd.DataFrame) -> None:
    rules = rules_of(configs)
    assert all(supported(rule) for rule in rules)
    assert_same(judged_by_evaluator(frame, rules), judged_by_gx(frame, rules))


# --- what the evaluator does not implement ------------------------------------------------------------


def test_a_type_the_evaluator_does_not_implement_is_judged_by_gx_on_the_hot_path() -> None:
    configs = [
        *suite_configs()[:3],
        {"type": "expect_column_values_to_not_match_regex", "kwargs": {"column": "order_id", "regex": "^bad"},
         "meta": {"field": "order_id", "reason": "order_id must not start with bad"}},
        {"type": "expect_column_values_to_match_regex",
         "kwargs": {"column": "quantity", "regex": "^[0-9]+\\Z",
                    "row_condition": 'type=="inventory"', "condition_parser": "pandas"},
         "meta": {"field": "quantity", "reason": "quantity with a row condition"}},
    ]
    rules = rules_of(configs)
    assert [supported(rule) for rule in rules] == [True, True, True, False, False]
    frame = prepare(pd.DataFrame([{"event_id": "e1", "order_id": "bad-1", "type": "inventory", "quantity": "x"},
                                  {"event_id": "e2", "order_id": "good", "type": "delivery", "quantity": "y"}], dtype=object))
    handed: list[list[str]] = []

    def gx(frame: pd.DataFrame, left: tuple[Rule, ...]) -> Judgement:
        handed.append([rule.reason for rule in left])
        return run_rules(frame, left)

    ours = evaluate(frame, rules, gx)
    assert handed == [["order_id must not start with bad", "quantity with a row condition"]]
    assert_same(ours, run_rules(frame, rules))
    assert ours.failing[3].tolist() == [0]


# --- GX batched: one run over several batches, cut back per batch ----------------------------------


@settings(max_examples=8, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow,
                                                                                HealthCheck.data_too_large])
@given(st.lists(hostile_frames(max_rows=20), min_size=2, max_size=4))
def test_gx_over_several_batches_cut_back_per_batch_is_gx_on_each_batch(raws: list[pd.DataFrame]) -> None:
    frames = [prepare(raw) for raw in raws]
    # Distinct event ids per batch, so the batches may run together (the producer's source has unique ids).
    for k, frame in enumerate(frames):
        frame["event_id"] = frame["event_id"].where(frame["event_id"].isna(), frame["event_id"].str.slice(0, 60) + f"#{k}")
    jobs = [CheckJob(f"b{k}", frame, Judgement([], [])) for k, frame in enumerate(frames)]
    cut_back = [result for group in groups(jobs, merge_rows=10_000) for result in split_results(group)]
    for job, (suite_result, not_run) in zip(jobs, cut_back):
        alone_result, alone_not_run = run_suite(job.frame)
        assert_same(judgement_of(suite_result, not_run, REASONS), judgement_of(alone_result, alone_not_run, REASONS))
        cut = {one.expectation_config.meta["reason"]: (one.success, one.result) for one in suite_result.results}
        alone = {one.expectation_config.meta["reason"]: (one.success, one.result) for one in alone_result.results}
        assert cut == alone
        assert suite_result.statistics == alone_result.statistics


def test_batches_that_share_an_event_id_or_dtypes_differ_are_not_run_together() -> None:
    def job(ids: list[str | None], quantity: list[str | None]) -> CheckJob:
        raw = pd.DataFrame({"event_id": ids, "type": ["inventory"] * len(ids), "quantity": quantity}, dtype=object)
        return CheckJob("b", prepare(raw), Judgement([], []))

    a, b, same_id, floats = job(["a1", None], ["1", "2"]), job(["b1", None], ["3", "4"]), job(["a1"], ["1"]), job(["c1"], [None])
    assert [len(g) for g in groups([a, b, same_id, floats], merge_rows=100)] == [2, 1, 1]
    assert [len(g) for g in groups([a, b], merge_rows=3)] == [1, 1]


def test_a_merged_gx_run_puts_each_failing_row_in_its_own_batch() -> None:
    raw = [pd.DataFrame({"event_id": [f"{k}-{i}" for i in range(3)], "type": ["inventory"] * 3,
                         "quantity": ["1", "0" if k == 1 else "2", "3"]}, dtype=object) for k in range(3)]
    jobs = [CheckJob(f"b{k}", prepare(frame), Judgement([], [])) for k, frame in enumerate(raw)]
    results = split_results(jobs)
    judgements = [judgement_of(result, not_run, REASONS) for result, not_run in results]
    between = REASONS.index("quantity must be between 1 and 10000")
    assert [j.failing[between].tolist() for j in judgements] == [[], [1], []]
    assert [j.stats[between].evaluated for j in judgements] == [3, 3, 3]
    assert np.all([len(j.failing[REASONS.index("created_at is required")]) == 3 for j in judgements])


@settings(max_examples=6, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow,
                                                                                HealthCheck.data_too_large])
@given(st.lists(hostile_frames(max_rows=20), min_size=2, max_size=4))
def test_results_kept_for_data_docs_are_gx_serialization_byte_for_byte(tmp_path_factory, raws: list[pd.DataFrame]) -> None:
    from orderstream.validation.docs import ResultKeeper

    frames = [prepare(raw) for raw in raws]
    for k, frame in enumerate(frames):  # distinct ids per batch, as above, so that they run together
        frame["event_id"] = frame["event_id"].where(frame["event_id"].isna(), frame["event_id"].str.slice(0, 60) + f"#{k}")
    jobs = [CheckJob(f"b{k}", frame, Judgement([], [])) for k, frame in enumerate(frames)]
    kept = 0
    for group in groups(jobs, merge_rows=10_000):
        keeper = ResultKeeper(tmp_path_factory.mktemp("docs"))  # one per group, as the check makes them
        store = keeper._store
        for job, (suite_result, _) in zip(group, split_results(group)):
            key = keeper.keep(suite_result, job.frame, job.batch_id)
            assert store.store_backend.get(store.key_to_tuple(key)) == store.serialize(suite_result), job.batch_id
            kept += 1
    assert kept == len(jobs)

"""Bulk statements for PostgreSQL and SQLite alike (the loader, the producer's commit, the consumers).

Every function takes the caller's session and never commits: the batch transaction
belongs to the runner.
"""

from __future__ import annotations

import typing
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import orjson
from sqlalchemy import (
    JSON,
    Column,
    ColumnElement,
    CursorResult,
    Result,
    Row,
    Select,
    Table,
    Text,
    bindparam,
    cast,
    column,
    func,
    select,
    text,
    true,
    tuple_,
    update,
)
from sqlalchemy.orm import Session
from sqlalchemy.types import TypeEngine

from orderstream.db.engine import dialect_insert
from orderstream.db.models import ConsumerCounter, ProcessedEvent, table_of

T = TypeVar("T")

LEDGER = table_of(ProcessedEvent)
COUNTERS = table_of(ConsumerCounter)

# Keeps every IN list well under SQLite's 32766 bound variables.
IN_CHUNK = 5_000


class RetryBatch(Exception):
    """The batch met a concurrent change it cannot reconcile: roll back and re-consume it."""


def is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def rowcount(result: Result[Any]) -> int:
    """The rows an UPDATE or DELETE matched (its result is a CursorResult; `Session.execute` is typed as any Result)."""
    return typing.cast(CursorResult[Any], result).rowcount


def chunks(items: Sequence[T], size: int = IN_CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# Advisory locks on stripes of a key space (PostgreSQL): a transaction locks the stripes of its
# keys, never more than LOCK_STRIPES of them whatever its batch, because the server's lock table is
# shared and small (max_locks_per_transaction per connection). Keys in one stripe merely wait for
# each other.
LOCK_STRIPES = 512
_STRIPE_LOCKS = {
    True: text("SELECT pg_advisory_xact_lock_shared(:space, s) FROM unnest(CAST(:stripes AS integer[])) AS s ORDER BY s"),
    False: text("SELECT pg_advisory_xact_lock(:space, s) FROM unnest(CAST(:stripes AS integer[])) AS s ORDER BY s"),
}


def stripes_of(keys: Iterable[str]) -> list[int]:
    """The stripes `keys` fall in, in lock order (the same in every process: crc32, not hash())."""
    return sorted({zlib.crc32(key.encode()) % LOCK_STRIPES for key in keys})


def lock_stripes(session: Session, space: int, keys: Iterable[str], *, shared: bool) -> None:
    """Hold the advisory locks of `keys`' stripes in `space` until the transaction ends, shared or
    exclusive, taken in stripe order so that no two transactions wait for each other in a cycle.
    SQLite write transactions are serialized already."""
    if not is_postgres(session):
        return
    if stripes := stripes_of(keys):
        session.execute(_STRIPE_LOCKS[shared], {"space": space, "stripes": stripes})


# On PostgreSQL a batch travels as ONE parameter, a JSON array of row objects serialized by
# orjson and expanded server-side by json_to_recordset: one short statement instead of
# thousands of placeholders, and no per-value adaptation in Python. SQLite gets the same
# statement shapes as executemany (its driver prepares once and steps per row, in-process).


def _recordset(rows: list[dict[str, Any]], types: Mapping[str, TypeEngine], name: str):
    """A derived table `name(col type, ...)` of `rows` on PostgreSQL."""
    payload = orjson.dumps(rows).decode()
    return (
        func.json_to_recordset(cast(bindparam(f"{name}_rows", payload, type_=Text), JSON))
        .table_valued(*[column(n, t) for n, t in types.items()])
        .render_derived(name=name, with_types=True)
    )


def insert_rows(
    session: Session,
    table: Table,
    rows: list[dict[str, Any]],
    *,
    constants: Mapping[str, Any] | None = None,
    skip_conflicts_on: Sequence[str] | None = None,
    update_conflicts_on: Sequence[str] | None = None,
    update_columns: Sequence[str] = (),
    returning: str | None = None,
) -> Sequence[Any]:
    """Bulk INSERT of rows that all have the same keys, plus `constants` for every row.

    Optionally ON CONFLICT (`skip_conflicts_on`) DO NOTHING, or ON CONFLICT
    (`update_conflicts_on`) DO UPDATE the `update_columns` (no two rows may share a key),
    and RETURNING one column of the rows actually inserted.
    """
    if not rows:
        return []
    constants = dict(constants or {})
    names = list(rows[0])
    stmt = dialect_insert(session, table)
    if is_postgres(session):
        source = _recordset(rows, {n: table.c[n].type for n in names}, "r")
        fixed = [bindparam(f"c_{n}", v, type_=table.c[n].type) for n, v in constants.items()]
        stmt = stmt.from_select(names + list(constants), select(*[source.c[n] for n in names], *fixed))
        params: Any = {}
    elif constants:
        params = [{**row, **constants} for row in rows]
    else:
        params = rows
    if skip_conflicts_on:
        stmt = stmt.on_conflict_do_nothing(index_elements=list(skip_conflicts_on))
    elif update_conflicts_on:
        stmt = stmt.on_conflict_do_update(
            index_elements=list(update_conflicts_on), set_={c: stmt.excluded[c] for c in update_columns}
        )
    if returning is None:
        session.execute(stmt, params)
        return []
    return session.execute(stmt.returning(table.c[returning]), params).scalars().all()


def bulk_update(
    session: Session,
    table: Table,
    params: list[dict[str, Any]],
    types: Mapping[str, TypeEngine],
    where: Callable[[Any], list[ColumnElement[bool]]],
    values: Callable[[Any], dict[str, Any]],
) -> int:
    """One UPDATE for many parameter rows; returns the number of rows updated.

    `where` and `values` build the clauses from `k[name]`, the row's parameter `name`:
    a column of a derived table on PostgreSQL (UPDATE ... FROM), a bound parameter on
    SQLite (executemany).
    """
    if not params:
        return 0
    if is_postgres(session):
        k: Any = _recordset(params, types, "k").c
        execute_params: Any = {}
    else:
        k = {n: bindparam(n, type_=typ) for n, typ in types.items()}
        execute_params = params
    stmt = update(table).where(*where(k)).values(**values(k))
    return rowcount(session.execute(stmt, execute_params))


def select_keys(
    session: Session,
    query: Select,
    key_columns: Sequence[Column],
    keys: Sequence[tuple[Any, ...]],
    *,
    lock: bool = False,
) -> list[Row]:
    """`query` restricted to rows whose `key_columns` are one of `keys`.

    On PostgreSQL the rows come in key order, and `lock` takes
    FOR UPDATE row locks in that order (SQLite write transactions are serialized already, and
    its rows come in the query's own ORDER BY).
    """
    if not keys:
        return []
    if is_postgres(session):
        names = [c.name for c in key_columns]
        source = _recordset([dict(zip(names, key)) for key in sorted(keys)], {c.name: c.type for c in key_columns}, "keys")
        # A LATERAL subquery is a nested loop over the keys, in their order: one index probe per
        # key. Joined plainly, the planner (which guesses 100 rows for the recordset) chose a hash
        # join over a full scan of the table, a cost that grew with the table. OFFSET 0 keeps the
        # planner from flattening the subquery into a plain join: on a table that grew since its
        # last ANALYZE it then scanned the table and probed the keys for each of its rows.
        probe = query.order_by(None).where(*[c == source.c[c.name] for c in key_columns]).offset(0)
        if lock:
            probe = probe.with_for_update(of=key_columns[0].table)
        lateral = probe.lateral("probe")
        ordered = [source.c[c.name] for c in key_columns]
        return list(session.execute(select(*lateral.c).select_from(source).join(lateral, true()).order_by(*ordered)))
    rows: list[Row] = []
    if len(key_columns) == 1:
        for chunk in chunks([key[0] for key in keys]):
            rows += session.execute(query.where(key_columns[0].in_(chunk)))
    else:
        for chunk in chunks(keys, IN_CHUNK // len(key_columns)):
            rows += session.execute(query.where(tuple_(*key_columns).in_(chunk)))
    return rows


def select_where_in(session: Session, query: Select, column: Column, values: Sequence[Any]) -> list[Row]:
    """`query` restricted to `column IN values`."""
    return select_keys(session, query, (column,), [(v,) for v in values])


def claim_events(session: Session, rows: list[dict[str, Any]], constants: Mapping[str, Any]) -> set[str]:
    """Insert the batch's ledger rows; return the event ids this transaction claimed.

    An id already in the ledger (a redelivery) is skipped by ON CONFLICT DO NOTHING and
    not returned. A concurrent transaction holding the same id makes this one wait for
    it, so exactly one of them claims each event.
    """
    claimed = insert_rows(
        session, LEDGER, rows, constants=constants, skip_conflicts_on=("consumer_group", "event_id"), returning="event_id"
    )
    return set(claimed)


def mark_dead_lettered(session: Session, group: str, rejected: Iterable[Any]) -> None:
    """Turn claimed ledger rows into `dead_lettered` ones with their error."""
    params = [
        {"k_event_id": env.ledger_key, "k_class": env.error_class, "k_message": env.error_message}
        for env in rejected
    ]
    bulk_update(
        session,
        LEDGER,
        params,
        {"k_event_id": Text(), "k_class": Text(), "k_message": Text()},
        where=lambda k: [LEDGER.c.consumer_group == group, LEDGER.c.event_id == k["k_event_id"]],
        values=lambda k: {"outcome": "dead_lettered", "error_class": k["k_class"], "error_message": k["k_message"]},
    )


def increment_counter(session: Session, group: str, name: str, by: int) -> None:
    if by <= 0:
        return
    stmt = dialect_insert(session, COUNTERS).values(consumer_group=group, name=name, value=by)
    stmt = stmt.on_conflict_do_update(
        index_elements=[COUNTERS.c.consumer_group, COUNTERS.c.name],
        set_={"value": COUNTERS.c.value + stmt.excluded.value},
    )
    session.execute(stmt)


def require_rowcount(updated: int, expected: int, what: str) -> None:
    """A conditional update that did not hit every row means a concurrent change: retry the batch."""
    if updated != expected:
        raise RetryBatch(f"{what}: {expected - updated} of {expected} conditional updates did not apply")

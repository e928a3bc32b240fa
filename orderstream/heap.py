"""Keep Python's cycle collector off the long-lived heap of a long-running role.

After start-up a role holds hundreds of thousands of long-lived objects (SQLAlchemy, pydantic,
pandas): a full collection walks them all, about 0.15 s of the producer's main thread with
the GIL held, a pause of every message in flight. Frozen, they are never scanned again; only
what the role allocates afterwards is.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def long_lived_heap_frozen(young_threshold: int | None = None) -> Iterator[None]:
    """Freeze what is alive now out of collection while in the block; `young_threshold`: let the
    young generation grow to that many objects between collections (about a batch)."""
    previous = gc.get_threshold()
    gc.collect()
    gc.freeze()
    if young_threshold is not None:
        gc.set_threshold(young_threshold, previous[1], previous[2])
    try:
        yield
    finally:
        gc.set_threshold(*previous)
        gc.unfreeze()

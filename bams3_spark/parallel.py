"""Running work on an executor while keeping results in input order."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future
from typing import Any


def ordered_map(
    fn: Callable[[Any], Any], items: Iterable[Any], executor: Executor, workers: int
) -> Iterator[Any]:
    """Yield ``fn(item)`` for each item, in order, computed on ``executor``.

    At most ``2 * workers`` calls are in flight, so results waiting behind a
    slow earlier item stay bounded in memory; an exception is raised at its
    item's turn, and pending work is cancelled (and the executor shut down)
    when the consumer stops.
    """
    it = iter(items)
    pending: deque[Future[Any]] = deque()
    try:
        for item in it:
            pending.append(executor.submit(fn, item))
            if len(pending) >= 2 * workers:
                break
        while pending:
            result = pending.popleft().result()
            for item in it:  # refill one slot
                pending.append(executor.submit(fn, item))
                break
            yield result
    finally:
        for fut in pending:
            fut.cancel()
        executor.shutdown(wait=True, cancel_futures=True)

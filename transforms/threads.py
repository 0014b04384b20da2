"""Stages of a stream run on threads of their own, bounded so that memory stays flat (no Beam here).

Decoding, the network and synthesis each leave cores idle that the others
could use: run one after another on one thread, they take turns. Two tools
overlap them, both keeping order and carrying a failure across to the
consuming thread, where it is raised with its traceback:

* ``prefetch`` (and ``prefetch_batches``) runs a generator ahead of its
  consumer, on a thread of its own;
* ``Background`` runs per-item work on worker threads behind its submitter and
  hands the results back in submission order.

``beamsplitter separate`` (pipeline/separate.py) strings its reader, model and
writer with them; the Beam steps use them through transforms/background.py.
"""

from __future__ import annotations

import collections
import contextlib
import queue
import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any, Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")

_END = object()


def prefetch_batches(items: Iterable[T], depth: int, size: int) -> Iterator[list[T]]:
    """The items of ``items``, produced up to ``depth`` ahead on a thread of their own, in lists of up to ``size``.

    A list holds the next item, waited for, and those after it that are
    already produced: never waiting for a full list, which would stall the
    end of a stream. An exception raised by ``items`` is raised here, after
    the items before it. Closing this generator early stops the producer and
    closes ``items``.
    """
    slots: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry) -> bool:
        while not stop.is_set():
            try:
                slots.put(entry, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def produce():
        iterator = iter(items)
        try:
            for item in iterator:
                if not put((item, None)):
                    return
            put((_END, None))
        except BaseException as exc:
            put((_END, exc))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()  # ends the producer's subprocesses when the consumer stopped early

    producer = threading.Thread(target=produce, name="beamsplitter-prefetch", daemon=True)
    producer.start()
    try:
        batch: list[T] = []
        while True:
            try:
                item, error = slots.get(block=not batch)
            except queue.Empty:
                yield batch
                batch = []
                continue
            if item is _END:
                if batch:
                    yield batch
                if error is not None:
                    raise error
                return
            batch.append(item)
            if len(batch) == size:
                yield batch
                batch = []
    finally:
        stop.set()
        producer.join()


def prefetch(items: Iterable[T], depth: int) -> Iterator[T]:
    """The items of ``items``, produced up to ``depth`` ahead on a thread of their own (see ``prefetch_batches``)."""
    with contextlib.closing(prefetch_batches(items, depth, 1)) as batches:
        for batch in batches:
            yield from batch


class Background:
    """Runs ``work(*args)`` on ``workers`` threads, at most ``limit`` pieces in flight.

    ``submit`` and ``drain`` yield ``(tag, result)`` pairs, oldest first, the
    tag being what the work was submitted with; an exception of the work is
    raised there. With one worker the pieces also run in submission order.
    """

    def __init__(self, work: Callable[..., T], workers: int, limit: int):
        self.work, self.limit = work, max(1, limit)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="beamsplitter-work")
        self._pending: collections.deque[tuple[Any, Future]] = collections.deque()
        self._failed = threading.Event()

    def submit(self, tag: Any, *args) -> Iterator[tuple[Any, T]]:
        """Starts ``work(*args)``; yields the results that are due (iterate it: it waits when ``limit`` are in flight)."""
        self._pending.append((tag, self._pool.submit(self._run, *args)))
        return self._finished(keep=self.limit - 1)

    def _run(self, *args):
        # After a failure the pieces behind it are skipped, not run: its
        # exception reaches the submitter first (pieces start in submission
        # order), and work done after it (a stem published, a track reported)
        # would be work the failed run never vouched for.
        if self._failed.is_set():
            return None
        try:
            return self.work(*args)
        except BaseException:
            self._failed.set()
            raise

    def drain(self) -> Iterator[tuple[Any, T]]:
        return self._finished(keep=0)

    def discard(self) -> None:
        """Drop the pending work: what has not started never will, what runs is waited for."""
        for _, future in self._pending:
            future.cancel()
        wait([future for _, future in self._pending])  # its results are dropped, its errors too
        self._pending.clear()
        self._failed.clear()

    def close(self) -> None:
        self.discard()
        self._pool.shutdown(wait=True)

    def _finished(self, keep: int) -> Iterator[tuple[Any, T]]:
        # Results leave in submission order: what is done is handed over, and
        # beyond `keep` in flight the oldest is waited for.
        while self._pending and (len(self._pending) > keep or self._pending[0][1].done()):
            tag, future = self._pending.popleft()
            yield tag, future.result()


def ordered_map(work: Callable[[Any], T], items: Iterable, threads: int = 8, window: int = 256) -> Iterator[T]:
    """``work(item)`` for each item, on ``threads`` threads, yielded in the items' order.

    At most ``window`` items are in flight, so memory does not grow with
    ``items``. Checking a track is mostly waiting (a stat, a record read, on
    object stores a request each): threads overlap the waits.
    """
    pool = Background(work, workers=threads, limit=window)
    try:
        for item in items:
            for _, result in pool.submit(None, item):
                yield result
        for _, result in pool.drain():
            yield result
    finally:
        pool.close()

"""Stages of a stream run on threads of their own, bounded so that memory stays flat (no Beam here).

Decoding, the network and synthesis each leave cores idle that the others
could use: run one after another on one thread, they take turns. Two tools
overlap them, both keeping order and carrying a failure across to the
consuming thread, where it is raised with its traceback:

* ``prefetch_batches`` runs a generator ahead of its
  consumer, on a thread of its own;
* ``Background`` runs per-item work on worker threads behind its submitter and
  hands the results back in submission order;
* ``Interleave`` runs several streams at once, each on a thread of its own,
  and hands their items over as they come (each stream's in its order).

``beamsplitter separate`` (pipeline/separate.py) strings its reader, model and
writer with them; the Beam steps use them through transforms/background.py.
"""

from __future__ import annotations

import collections
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


class Interleave:
    """Up to ``streams`` iterables produced at once, each on a thread of its own, their items merged.

    ``add`` and ``drain`` yield ``(tag, item)`` pairs as the streams produce
    them: one stream's items in its order, different streams' as they come, so
    that a slow stream never holds up the items of the others. At most
    ``depth`` items wait to be taken (and one more per stream), so memory stays
    flat. An exception raised by a stream is raised where its items are taken,
    after the items before it; ``close`` (or ``discard``) stops every stream and
    closes its iterable, on its own thread.
    """

    def __init__(self, streams: int, depth: int):
        self.streams = max(1, streams)
        self._items: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()

    def add(self, tag: Any, items: Iterable[T]) -> Iterator[tuple[Any, T]]:
        """Starts producing ``items``; yields what is ready (iterate it: with ``streams`` running, it first
        hands over items until one of them ends)."""
        while len(self._threads) >= self.streams:
            yield from self._take(block=True)
        thread = threading.Thread(target=self._produce, args=(tag, items), name="beamsplitter-interleave",
                                  daemon=True)
        self._threads.append(thread)
        thread.start()
        while True:
            try:
                yield from self._take(block=False)
            except queue.Empty:
                return

    def drain(self) -> Iterator[tuple[Any, T]]:
        """Every item still to come, until all streams have ended."""
        while self._threads:
            yield from self._take(block=True)

    def discard(self) -> None:
        """Stop every stream; what they produced and have not handed over is dropped."""
        self._stop.set()  # a stream waiting to hand over an item sees it within 0.1 s
        for thread in self._threads:
            thread.join()
        self._threads.clear()
        self._items = queue.Queue(maxsize=self._items.maxsize)
        self._stop.clear()

    close = discard

    def _take(self, block: bool) -> Iterator[tuple[Any, T]]:
        tag, item, error, thread = self._items.get(block=block)
        if item is not _END:
            yield tag, item
            return
        thread.join()
        self._threads.remove(thread)
        if error is not None:
            raise error

    def _produce(self, tag: Any, items: Iterable[T]) -> None:
        thread, iterator = threading.current_thread(), iter(items)

        def put(item, error=None) -> bool:
            while not self._stop.is_set():
                try:
                    self._items.put((tag, item, error, thread), timeout=0.1)
                    return True
                except queue.Full:
                    pass
            return False

        try:
            for item in iterator:
                if not put(item):
                    return
            put(_END)
        except BaseException as exc:
            put(_END, exc)
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()  # ends the stream's subprocesses when it was stopped early


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

"""Work that a DoFn hands to threads of its own, so the bundle's thread never waits on it.

A runner executes the DoFns of a fused stage one element at a time on one
thread: decoding, the network and synthesis would take turns, each leaving
cores idle that the others could use (``beamsplitter separate`` overlaps them
the same way, with threads). Two tools, both bounded so memory stays flat:

* ``prefetch`` runs a generator ahead of its consumer (decoding);
* ``Background`` runs per-element work on worker threads and hands the results
  back to the bundle's thread in submission order; ``BackgroundDoFn`` is the
  DoFn around it, whose ``finish_bundle`` drains it, so a bundle still ends
  only when all of its work is done.

Beam's metrics belong to the bundle's thread: count in the DoFn, on the results,
never inside the work itself.
"""

from __future__ import annotations

import collections
import queue
import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any, Callable, Iterable, Iterator, TypeVar

import apache_beam as beam
from apache_beam.pvalue import TaggedOutput
from apache_beam.utils.windowed_value import WindowedValue

T = TypeVar("T")

_END = object()


def prefetch(items: Iterable[T], depth: int) -> Iterator[T]:
    """The items of ``items``, produced up to ``depth`` ahead on a thread of their own.

    An exception raised by ``items`` is raised here, after the items before it.
    Closing this generator early stops the producer and closes ``items``.
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
        while True:
            item, error = slots.get()
            if item is _END:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        producer.join()


def rewindow(windowed: WindowedValue, output: Any) -> Any:
    """``output`` (or a ``TaggedOutput``) in the window and at the timestamp of ``windowed``."""
    if isinstance(output, TaggedOutput):
        return TaggedOutput(output.tag, windowed.with_value(output.value))
    return windowed.with_value(output)


class Background:
    """Runs ``work(*args)`` on ``workers`` threads, at most ``limit`` pieces in flight.

    ``submit`` and ``drain`` yield ``(windowed_element, result)`` pairs, oldest
    first; an exception of the work is raised there, failing the bundle.
    """

    def __init__(self, work: Callable[..., T], workers: int, limit: int):
        self.work, self.limit = work, max(1, limit)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="beamsplitter-work")
        self._pending: collections.deque[tuple[WindowedValue, Future]] = collections.deque()

    def submit(self, windowed: WindowedValue, *args) -> Iterator[tuple[WindowedValue, T]]:
        """Starts ``work(*args)`` for the element ``windowed``; yields the results that are due."""
        self._pending.append((windowed, self._pool.submit(self.work, *args)))
        return self._finished(keep=self.limit - 1)

    def drain(self) -> Iterator[tuple[WindowedValue, T]]:
        return self._finished(keep=0)

    def discard(self) -> None:
        """Drop the work of a failed bundle: what has not started never will, what runs is waited for."""
        for _, future in self._pending:
            future.cancel()
        wait([future for _, future in self._pending])  # its results are dropped, its errors too
        self._pending.clear()

    def close(self) -> None:
        self.discard()
        self._pool.shutdown(wait=True)

    def _finished(self, keep: int) -> Iterator[tuple[WindowedValue, T]]:
        # Results leave in submission order: what is done is handed over, and
        # beyond `keep` in flight the oldest is waited for.
        while self._pending and (len(self._pending) > keep or self._pending[0][1].done()):
            windowed, future = self._pending.popleft()
            yield windowed, future.result()


class BackgroundDoFn(beam.DoFn):
    """A DoFn whose per-element ``work`` runs on ``workers`` threads, ``in_flight`` elements at most.

    Subclasses give ``work`` (on a worker thread), and may give ``arguments``
    (its arguments, taken from the element on the bundle's thread) and
    ``outputs`` (what a result yields, on the bundle's thread: count there).
    """

    workers = 1
    in_flight = 1

    def setup(self):
        self.background = Background(self.work, workers=self.workers, limit=self.in_flight)

    def start_bundle(self):
        self.background.discard()  # a failed bundle's

    def process(self, element, windowed=beam.DoFn.WindowedValueParam):
        for source, result in self.background.submit(windowed, *self.arguments(element)):
            yield from self.outputs(source, result)

    def finish_bundle(self):
        for source, result in self.background.drain():
            yield from self.outputs(source, result)

    def teardown(self):
        self.background.close()

    def arguments(self, element) -> tuple:
        return (element,)

    def work(self, *args):
        raise NotImplementedError

    def outputs(self, source: WindowedValue, result) -> Iterator:
        yield rewindow(source, result)

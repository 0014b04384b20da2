"""The threads that stages hand work to (transforms/threads.py, and DoFns through transforms/background.py):
order, bounds, errors and early stops."""

from __future__ import annotations

import contextlib
import threading
import time

import pytest
from apache_beam.pvalue import TaggedOutput
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue

from transforms.background import rewindow
from transforms.threads import Background, Interleave, ordered_map, prefetch_batches


def prefetch(items, depth: int):
    """The items one by one, as ``prefetch_batches`` of size 1 hands them over."""
    with contextlib.closing(prefetch_batches(items, depth, 1)) as batches:
        for batch in batches:
            yield from batch

def test_prefetch_yields_everything_in_order_and_runs_ahead():
    produced = []

    def numbers():
        for i in range(10):
            produced.append(i)
            yield i

    stream = prefetch(numbers(), depth=3)
    assert next(stream) == 0
    deadline = time.monotonic() + 5
    while len(produced) < 4 and time.monotonic() < deadline:  # 1 taken + 3 waiting
        time.sleep(0.01)
    assert produced == [0, 1, 2, 3, 4] or produced == [0, 1, 2, 3]
    assert list(stream) == list(range(1, 10))


def test_prefetch_raises_the_producers_error_after_the_items_before_it():
    def failing():
        yield 1
        yield 2
        raise ValueError("corrupt block")

    got = []
    with pytest.raises(ValueError, match="corrupt block"):
        for item in prefetch(failing(), depth=1):
            got.append(item)
    assert got == [1, 2]


def test_closing_prefetch_early_stops_and_closes_the_producer():
    closed = threading.Event()

    def endless():
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.set()

    stream = prefetch(endless(), depth=2)
    assert [next(stream) for _ in range(3)] == [0, 1, 2]
    stream.close()
    assert closed.wait(5), "the producer's generator was not closed"


def test_prefetch_batches_hand_over_what_is_ready_without_waiting_for_a_full_batch():
    going, stalled, more = threading.Event(), threading.Event(), threading.Event()

    def numbers():
        yield 0
        going.wait(5)
        yield from (1, 2)
        stalled.set()
        more.wait(5)
        yield 3
        raise ValueError("corrupt block")

    batches = prefetch_batches(numbers(), depth=4, size=3)
    assert next(batches) == [0]
    going.set()
    assert stalled.wait(5)
    assert next(batches) == [1, 2]  # not held back for a third that is still coming
    more.set()
    assert next(batches) == [3]
    with pytest.raises(ValueError, match="corrupt block"):
        next(batches)


def _windowed(value):
    return WindowedValue(value, 0, [GlobalWindow()])


def test_background_hands_results_back_in_submission_order_within_its_limit():
    running, most = 0, 0
    lock = threading.Lock()

    def work(i):
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.02 * (5 - i % 5))  # later work finishes first
        with lock:
            running -= 1
        return i * i

    background = Background(work, workers=3, limit=3)
    results = []
    for i in range(12):
        results.extend(background.submit(_windowed(i), i))
        assert len(background._pending) <= 3
    results.extend(background.drain())
    background.close()
    assert [source.value for source, _ in results] == list(range(12))
    assert [result for _, result in results] == [i * i for i in range(12)]
    assert most <= 3


def test_background_raises_the_works_error_runs_nothing_behind_it_and_discard_forgets_the_rest():
    """Work behind a failure would act for a run that already failed (publish a stem, report a track)."""
    done = []

    def work(i):
        if i == 1:
            raise OSError("disk full")
        done.append(i)
        return i

    background = Background(work, workers=1, limit=8)
    for i in range(5):
        list(background.submit(_windowed(i), i))
    with pytest.raises(OSError, match="disk full"):
        list(background.drain())
    assert done == [0]
    background.discard()
    assert list(background.drain()) == []
    assert [result for _, result in background.submit(_windowed(9), 9)] + \
        [result for _, result in background.drain()] == [9]
    background.close()


def test_ordered_map_keeps_order():
    assert list(ordered_map(lambda x: x * x, range(1000), threads=4, window=7)) == [x * x for x in range(1000)]


def test_discard_waits_for_running_work_and_never_starts_the_rest():
    started, finished = [], []
    release = threading.Event()

    def work(i):
        started.append(i)
        release.wait(5)
        time.sleep(0.05)
        finished.append(i)

    background = Background(work, workers=1, limit=8)
    for i in range(3):
        list(background.submit(_windowed(i), i))
    while not started:
        time.sleep(0.01)
    release.set()
    background.discard()  # a new bundle may now reuse what the running work touched
    assert finished == [0] and started == [0]
    background.close()


def test_rewindow_keeps_tags_and_windows():
    source = WindowedValue("in", 42, [GlobalWindow()])
    plain = rewindow(source, "out")
    tagged = rewindow(source, TaggedOutput("failures", "bad"))
    assert (plain.value, plain.timestamp, plain.windows) == ("out", source.timestamp, source.windows)
    assert tagged.tag == "failures" and tagged.value.value == "bad" and tagged.value.timestamp == source.timestamp


def test_interleave_runs_its_streams_at_once_each_in_order():
    """A stream waiting on another's progress (a slow decoder beside a quick one) never holds it up:
    one at a time, ``slow`` would wait for ``quick`` forever."""
    quick_started = threading.Event()

    def slow():
        yield "s0"
        assert quick_started.wait(10), "the second stream did not start beside the first"
        yield "s1"

    def quick():
        quick_started.set()
        yield from ("q0", "q1", "q2")

    streams = Interleave(streams=2, depth=1)
    got = [*streams.add("slow", slow()), *streams.add("quick", quick()), *streams.drain()]
    streams.close()
    assert sorted(got) == [("quick", "q0"), ("quick", "q1"), ("quick", "q2"), ("slow", "s0"), ("slow", "s1")]
    assert [item for tag, item in got if tag == "quick"] == ["q0", "q1", "q2"]
    assert got.index(("quick", "q0")) < got.index(("slow", "s1"))


def test_interleave_holds_at_most_its_streams_and_depth():
    running, most = set(), [0]
    lock = threading.Lock()

    def stream(name):
        with lock:
            running.add(name)
            most[0] = max(most[0], len(running))
        try:
            yield from range(5)
        finally:
            with lock:
                running.discard(name)

    streams = Interleave(streams=3, depth=2)
    got = []
    for name in range(10):
        got.extend(streams.add(name, stream(name)))
        assert streams._items.qsize() <= 2
    got.extend(streams.drain())
    streams.close()
    assert most[0] == 3
    assert sorted(got) == [(name, i) for name in range(10) for i in range(5)]
    for name in range(10):
        assert [i for tag, i in got if tag == name] == list(range(5))


def test_interleave_raises_a_streams_error_after_its_items_and_discard_closes_the_others():
    closed = threading.Event()

    def failing():
        yield 1
        raise ValueError("corrupt block")

    def endless():
        try:
            while True:
                yield "more"
        finally:
            closed.set()

    streams = Interleave(streams=2, depth=1)
    got = []
    with pytest.raises(ValueError, match="corrupt block"):
        for pair in [*streams.add("endless", endless()), *streams.add("failing", failing())]:
            got.append(pair)
        for pair in streams.drain():
            got.append(pair)
    assert ("failing", 1) in got
    streams.discard()
    assert closed.wait(5), "the other stream's generator was not closed"
    # usable again after a discard (a DoFn's next bundle)
    assert list(streams.add("again", iter([7]))) + list(streams.drain()) == [("again", 7)]
    streams.close()

"""Work that a DoFn hands to threads of its own, so the bundle's thread never waits on it.

A runner executes the DoFns of a fused stage one element at a time on one
thread: decoding, the network and synthesis would take turns (transforms/threads.py).
``BackgroundDoFn`` runs its per-element work on a ``Background`` pool and
hands the results back to the bundle's thread in element order; its
``finish_bundle`` drains the pool, so a bundle still ends only when all of its
work is done.

Beam's metrics belong to the bundle's thread: count in the DoFn, on the results,
never inside the work itself.
"""

from __future__ import annotations

from typing import Any, Iterator

import apache_beam as beam
from apache_beam.pvalue import TaggedOutput
from apache_beam.utils.windowed_value import WindowedValue

from transforms.threads import Background


def rewindow(windowed: WindowedValue, output: Any) -> Any:
    """``output`` (or a ``TaggedOutput``) in the window and at the timestamp of ``windowed``."""
    if isinstance(output, TaggedOutput):
        return TaggedOutput(output.tag, windowed.with_value(output.value))
    return windowed.with_value(output)


class BackgroundDoFn(beam.DoFn):
    """A DoFn whose per-element ``work`` runs on ``workers`` threads, ``in_flight`` elements at most.

    Subclasses give ``work`` (on a worker thread), and may give ``arguments``
    (its arguments, taken from the element on the bundle's thread) and
    ``outputs`` (what a result yields, on the bundle's thread: count there).
    An exception of the work is raised on the bundle's thread, failing the bundle.
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

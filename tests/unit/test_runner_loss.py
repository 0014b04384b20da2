"""A job the runner failed: what its root cause, the one line Flink's job server passes on, says was lost.

The causes are those the fault runs on a local Flink cluster gave (docs/flink.md);
tests/pipeline/test_flink_faults.py provokes the first three for real.
"""

import pytest

from pipeline.run import runner_loss

GRPC = "org.apache.beam.vendor.grpc.v1p60p1.io.grpc.StatusRuntimeException"


@pytest.mark.parametrize("cause,lost", [
    ("java.util.concurrent.TimeoutException: Timeout has occurred: 30000 ms",
     "no free task slot on the Flink cluster (is its TaskManager running?)"),
    ("org.apache.flink.runtime.jobmaster.JobMasterException: TaskManager with id 127.0.0.1:33903-860f08 is no "
     "longer reachable.", "the Flink TaskManager was lost"),
    (f"{GRPC}: {GRPC}: CANCELLED: client cancelled", "an SDK worker process died"),
    # With a restart strategy: each restart is handed the dead worker's environment, which the TaskManager caches.
    (f"{GRPC}: {GRPC}: CANCELLED: call already cancelled. Use ServerCallStreamObserver.setOnCancelHandler() to "
     "disable this exception", "an SDK worker process died"),
    ("java.lang.RuntimeException: ValueError: a step that kept failing", None),
])
def test_a_failed_jobs_cause_says_what_was_lost(cause, lost):
    assert runner_loss(cause) == lost

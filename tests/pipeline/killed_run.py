"""`beamsplitter` killed by SIGKILL at one chosen moment of its writing, for the tests of recovery.

Usage: ``python -m tests.pipeline.killed_run MOMENT run ARGS...``, MOMENT one of

* ``after-record``: just after a track's completion record is published (before the
  metadata commit that it names can land);
* ``after-withdrawal``: just after a redo withdrew a track's earlier completion record.

The command runs as ``beamsplitter`` does, on the local runner, which runs its
pipelines in this process: the process kills itself, with SIGKILL, right after
that storage call returns, at the first such moment. Nothing is cleaned up, as
after a preempted machine or an out-of-memory kill.
"""

from __future__ import annotations

import os
import signal
import sys

from pipeline import cli
from transforms.catalogue import storage
from transforms.catalogue.layout import RECORD


def _is_record(uri: str) -> bool:
    return uri.rsplit("/", 1)[-1] == RECORD


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def kill_after_record() -> None:
    publish = storage.publish_bytes

    def publish_then_die(data, uri, *args, **kwargs):
        publish(data, uri, *args, **kwargs)
        if _is_record(uri):
            _die()

    storage.publish_bytes = publish_then_die


def kill_after_withdrawal() -> None:
    delete = storage.delete_files

    def delete_then_die(uris):
        withdrawn = [uri for uri in uris if _is_record(uri) and storage.exists(uri)]
        delete(uris)
        if withdrawn:
            _die()

    storage.delete_files = delete_then_die


MOMENTS = {"after-record": kill_after_record, "after-withdrawal": kill_after_withdrawal}

if __name__ == "__main__":
    MOMENTS[sys.argv[1]]()
    sys.exit(cli.main(sys.argv[2:]))

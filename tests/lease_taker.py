"""Runs taking an output's lease, each in a process of its own, driven line by line by a test.

``python -m tests.lease_taker RUN_ID [Beam options]`` prints ``ready``, then answers each line of
its input:

* ``take URI [SECONDS]``: ``held <token>``, ``refused <message>`` or ``error <exception>``; with
  SECONDS, a lease of that term renewed four times in it (else the module's own);
* ``check``: ``ok`` or ``lost <message>``;
* ``release``: ``released`` (the lease withdrawn, ready to take one again).

Only the lease's public interface is used (``with Lease(uri, run_id) as lease: lease.check()``).
``Taker`` starts one and talks to it.
"""

from __future__ import annotations

import contextlib
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str]) -> None:
    run_id, beam_args = argv[0], argv[1:]

    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import PipelineOptions

    from tests import services
    from transforms.catalogue import lease
    from transforms.catalogue.lease import Lease, LeaseHeld

    FileSystems.set_options(PipelineOptions(beam_args))  # as pipeline/run.py does
    terms = lease.LEASE_SECONDS, lease.RENEW_SECONDS

    def say(*words) -> None:
        print(*(" ".join(str(w).splitlines()) for w in words), flush=True)

    # Against an emulator, anonymous at once, as services.gcs_emulator makes the test process (Beam would
    # look for credentials for about 20 s first).
    anonymous = os.environ.get("STORAGE_EMULATOR_HOST")
    with services._beam_gcs_anonymous() if anonymous else contextlib.nullcontext():
        say("ready")
        held = None
        for line in sys.stdin:
            command, *words = line.split()
            try:
                if command == "take":
                    lease.LEASE_SECONDS, lease.RENEW_SECONDS = (float(words[1]), float(words[1]) / 4) \
                        if len(words) > 1 else terms
                    taking = Lease(words[0], run_id)
                    taking.__enter__()
                    held = taking
                    say("held", held.token)
                elif command == "check":
                    held.check()
                    say("ok")
                elif command == "release":
                    held.__exit__(None, None, None)
                    held = None
                    say("released")
            except LeaseHeld as refused:
                say("refused" if command == "take" else "lost", refused)
            except Exception as exc:
                say("error", repr(exc))
        if held:
            held.__exit__(None, None, None)


class Taker:
    """A ``lease_taker`` process: ``ask(command)`` returns its answer's first word and the rest."""

    def __init__(self, run_id: str, *args: str, env: dict | None = None, wrap: list[str] = ()):
        environ = dict(os.environ, **(env or {}), PYTHONPATH=os.pathsep.join(
            [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]))
        self.run_id = run_id
        self.process = subprocess.Popen([*wrap, sys.executable, "-m", "tests.lease_taker", run_id, *args],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=environ,
                                        cwd=REPO)
        self._answers: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.token: str | None = None

    def _read(self) -> None:
        for line in self.process.stdout:
            self._answers.put(line.rstrip("\n"))
        self._answers.put("exited")

    def send(self, command: str) -> None:
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()

    def answer(self, timeout: float = 120.0) -> tuple[str, str]:
        word, _, rest = self._answers.get(timeout=timeout).partition(" ")
        if word == "held":
            self.token = rest
        return word, rest

    def ask(self, command: str, timeout: float = 120.0) -> tuple[str, str]:
        self.send(command)
        return self.answer(timeout)

    def ready(self) -> "Taker":
        assert self.answer() == ("ready", ""), "the taker did not start"
        return self

    def close(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(BrokenPipeError):
                self.process.stdin.close()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


if __name__ == "__main__":
    main(sys.argv[1:])

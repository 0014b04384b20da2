"""One boto3 S3 client per process and settings, for Beam's s3:// filesystem and the lease alike.

Beam's S3 filesystem makes a new boto3 session and client for every operation
(``S3IO(options=...)`` in each ``S3FileSystem`` method), and each new session
reads botocore's service description again: about 0.14 CPU-s here. A run over
9 tracks on S3 made 30 of them in its driver alone (4.2 s of its 34 s), about a
CPU-second per track. boto3's clients are thread-safe (its sessions, which
cost the time, are not shared), so ``install`` has Beam's client wrapper take
the process's client for its settings; what the wrapper keeps per instance (an
open download) stays its own.
"""

from __future__ import annotations

import functools


def settings(options) -> tuple:
    """The ``s3_*`` options of Beam's PipelineOptions or of an options dict, as a hashable key."""
    if not isinstance(options, dict):
        options = options.get_all_options()
    return tuple(sorted((name, value) for name, value in options.items() if name.startswith("s3_")))


@functools.lru_cache(maxsize=8)
def _wrapper(key: tuple):
    """A wrapper made by Beam's own code for these settings, whose boto3 client every later one shares."""
    from apache_beam.io.aws.clients.s3 import boto3_client

    made = boto3_client.Client.__new__(boto3_client.Client)
    (_BEAMS_INIT or boto3_client.Client.__init__)(made, dict(key))
    return made


def client(key: tuple):
    """boto3's S3 client for these ``settings``: made once per process."""
    return _wrapper(key).client


def _shared_init(self, options) -> None:
    # The template's attributes: its client, and the fresh per-download state (None and 0) to rebind.
    self.__dict__.update(_wrapper(settings(options)).__dict__)


_BEAMS_INIT = None  # Beam's own __init__, once install has replaced it


def install() -> None:
    """Make Beam's S3 client wrapper reuse the process's boto3 client; once per process, where boto3 exists."""
    global _BEAMS_INIT
    try:
        from apache_beam.io.aws.clients.s3 import boto3_client
    except ImportError:
        return
    if boto3_client.boto3 is None or _BEAMS_INIT is not None:
        return
    _BEAMS_INIT = boto3_client.Client.__init__
    boto3_client.Client.__init__ = _shared_init

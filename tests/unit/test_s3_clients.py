"""Beam's s3:// filesystem shares one boto3 client per process and settings (transforms/catalogue/s3_clients.py)."""

from __future__ import annotations

import threading

import boto3
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from tests import services
from transforms.catalogue import s3_clients, storage  # noqa: F401  (storage installs the sharing)


def test_object_operations_make_one_client_and_keep_their_downloads_apart(monkeypatch):
    sessions = []
    made = boto3.session.Session.__init__

    def counting(self, *args, **kwargs):
        sessions.append(threading.get_ident())
        made(self, *args, **kwargs)

    with services.s3_server("shared") as s3:
        options = s3.beam_options()
        FileSystems.set_options(PipelineOptions(options))
        try:
            monkeypatch.setattr(boto3.session.Session, "__init__", counting)
            payloads = {f"s3://shared/t{i}.bin": bytes([i]) * (300_000 + i) for i in range(6)}
            for uri, data in payloads.items():
                with FileSystems.create(uri) as out:
                    out.write(data)
            listed = {m.path: m.size_in_bytes for m in FileSystems.match(["s3://shared/*"])[0].metadata_list}
            assert listed == {uri: len(data) for uri, data in payloads.items()}
            assert all(FileSystems.exists(uri) for uri in payloads)
            # Two downloads open at once through the shared client, read in turns: neither takes the other's bytes.
            first, second = (FileSystems.open(uri, compression_type="uncompressed") for uri in list(payloads)[:2])
            halves = [first.read(150_000), second.read(150_000), first.read(), second.read()]
            assert halves[0] + halves[2] == payloads["s3://shared/t0.bin"]
            assert halves[1] + halves[3] == payloads["s3://shared/t1.bin"]
            FileSystems.delete(list(payloads))
            assert not FileSystems.match(["s3://shared/*"])[0].metadata_list
            # At most the one session of these settings (none when an earlier test of this process made it).
            assert len(sessions) <= 1, f"{len(sessions)} boto3 sessions for one set of S3 options"
            assert s3_clients.client(s3_clients.settings(PipelineOptions(options))) is \
                s3_clients.client(s3_clients.settings(PipelineOptions(options)))
        finally:
            FileSystems.set_options(PipelineOptions([]))

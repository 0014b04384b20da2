"""One convention for every location a user gives: files, folders, globs, prefixes.

* a local path becomes absolute and normalized (``./``, ``..`` and doubled
  slashes resolved against the working folder): ``music/../a.mp3`` ->
  ``/home/me/a.mp3``;
* a ``file://`` URI becomes that same local path (``file:///data/a.mp3`` and
  ``file://localhost/data/a.mp3`` -> ``/data/a.mp3``), taken literally: no
  percent-decoding, as in manifests;
* any other URI (``gs://``, ``s3://``, ``https://``) is kept as given.

Sources, stems and prefixes are stored in completion records and metadata in
this form, so the same file reached by another spelling, or from another
working folder, is recognized as the same.
"""

from __future__ import annotations

import os

from models.errors import InputError

FILE = "file://"


def normalize(uri: str) -> str:
    """``uri`` in the one form described above; ``InputError`` for a ``file://`` URI that names no path."""
    if uri[:len(FILE)].lower() == FILE:
        path = uri[len(FILE):]
        if path[:len("localhost/")].lower() == "localhost/":
            path = path[len("localhost"):]
        if not path.startswith("/"):
            raise InputError(f"{uri}: a file:// URI needs an absolute path (file:///folder/file)")
        uri = path
    if "://" in uri:
        return uri
    return os.path.abspath(uri)  # abspath also normalizes: ./, .., //

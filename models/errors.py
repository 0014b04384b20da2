"""The one error hierarchy of beamsplitter.

Every failure a user can cause or fix (a bad file, a missing model, a malformed
manifest row) is a ``BeamsplitterError``: the CLI prints its message on one line
and exits non-zero, the pipeline records it as a failure row. Anything else is
a bug and keeps its traceback.
"""


class BeamsplitterError(Exception):
    """An expected failure, reported to the user as one line."""

    #: The processing stage, as written in the failures table.
    stage = "engine"
    #: The command's exit status when this error ends it (2: a bad input or option, nothing started).
    exit_status = 2


class ConfigError(BeamsplitterError):
    """A model configuration is unknown or malformed."""

    stage = "config"


class ModelError(BeamsplitterError):
    """A checkpoint cannot be found, fetched, verified or loaded."""

    stage = "model"


class AudioError(BeamsplitterError):
    """An input cannot be decoded or an output cannot be encoded."""

    stage = "decode"


class EncodeError(AudioError):
    stage = "encode"


class InputError(BeamsplitterError):
    """A manifest row or command-line input is unusable."""

    stage = "validate"

"""TensorFlow loaded once, without its start-up noise, by whichever command comes to need it.

Each command loads it only after its options are checked (a typo is refused
in a fraction of a second, not after the 3 to 5 s TensorFlow takes to load),
and only where it runs a model in this process: a launcher of a distributed
run, ``plan`` and ``report`` never load it.
"""

from __future__ import annotations

import gc
import logging
import os
import sys


def load() -> None:
    """Import TensorFlow, its C++ start-up lines hidden unless the command is verbose (logs at INFO).

    Those lines bypass every log setting, so fd 2 is hidden while it loads.
    Python's cycle collector would scan TensorFlow's millions of objects again
    and again, during the import and after it (a second of a short run's
    start-up): it pauses while TensorFlow loads, and what was loaded is then
    left out of its scans for good (``gc.freeze``).
    """
    if "tensorflow" in sys.modules:
        return
    if logging.getLogger().getEffectiveLevel() <= logging.INFO:
        _import_without_keras()
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    gc.disable()
    try:
        os.dup2(devnull, 2)
        _import_without_keras()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
        gc.freeze()
        gc.enable()
    logging.getLogger("tensorflow").setLevel(logging.ERROR)


def _import_without_keras() -> None:
    """Import TensorFlow without the Keras optimizers it imports eagerly (0.8 s of a 3.5 s import here).

    TensorFlow imports ``keras.src.optimizers`` only to register them for
    SavedModels that hold a Keras optimizer, and passes over an ImportError;
    the separation network is a plain ``tf.Module``. The module is marked
    missing while TensorFlow loads, then unmarked, so that a command that does
    use Keras (``train``'s optimizers) imports it as usual when it gets there.
    """
    skipped = "keras.src.optimizers"
    if skipped in sys.modules:
        import tensorflow  # noqa: F401
        return
    sys.modules[skipped] = None  # an import of it raises ImportError
    try:
        import tensorflow  # noqa: F401
    finally:
        if sys.modules.get(skipped, 0) is None:
            del sys.modules[skipped]

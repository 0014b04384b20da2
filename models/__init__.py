"""The separation itself, usable without Beam and without the CLI.

Spleeter's configurations (``config``), U-Net (``unet``), checkpoints (``checkpoint``,
``provider``), STFT and masks (``spectral``), chunking and overlap-add (``chunking``), a loaded
model separating chunks (``separator``), the Wiener filter (``wiener``), the stem writer
(``stems``), ffmpeg audio in and out (``audio``), a model as a SavedModel (``export``), and
what evaluation and training compute (``bsseval``, ``oracle``, ``training``, ``crops``,
``examples``, ``loss_curve``). Functions work on numpy arrays, documented by shapes and units;
``uris`` gives every location one form, and ``errors`` is the one error hierarchy of the
project. Nothing here imports ``transforms`` or ``pipeline``.
"""

import os

# oneDNN's CPU kernels: about twice TensorFlow's own speed for the network where TensorFlow leaves
# them off by default (x86 CPUs without AVX-512's newer extensions, AMD EPYC among them), and a
# chunk's result that does not depend on the chunks batched with it (see Separator). TensorFlow
# reads this once, as it loads; every process that runs the model imports this package first (the
# CLI, the local runner, SDK workers unpickling the model handler). Set it to 0 to turn them off.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

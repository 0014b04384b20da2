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

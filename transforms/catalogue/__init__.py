"""A catalogue's data model and where it is stored: what the Beam steps read and write.

``manifest`` (rows to tracks or failure rows), ``index`` (a manifest's rows in order; the local
runner's on-disk index of them), ``layout`` (where every output of a model goes),
``completion`` (the completion record that makes a track done), ``lease`` (one run per model
output), ``storage`` (local, gs:// and s3:// files, names taken literally), ``dataset`` and
``training_manifest`` (evaluation and training sets). No Beam step lives here; imports go to
``models`` only.
"""

"""The Beam steps of beamsplitter's jobs: composite transforms and DoFns, thin over ``models``.

The catalogue job, in order: ``read`` (ReadCatalogue), ``skip`` (SkipDone), ``decode``
(DecodeChunks), ``inference`` (SeparateChunks), ``stash`` (scratch storage for chunk fan-out),
``reassemble`` (ReassembleTracks), ``write`` (WriteParquet, CommitMarker). The training set's:
``training_set`` and ``crop_levels``. ``chunks`` holds the elements that pass between steps and
their coder; ``threads`` the Beam-free helpers that overlap stages on threads (prefetch_batches, an
ordered worker pool; ``beamsplitter separate`` uses them too), and ``background`` the DoFn
that hands a step's work to them. What the steps read and write
(manifests, layout, records, storage) is in ``catalogue``.
"""

"""What beamsplitter runs: the CLI and one module per command.

``cli`` parses arguments and turns results into exit statuses; ``separate`` (files on one
machine, threads), ``run`` (the catalogue job, with ``waves`` for the local runner and
``options``), ``plan``, ``evaluate`` (with ``scorecard``), ``train``, ``demo`` (the demo
catalogue's music). Each builds its job from ``transforms`` and ``models``.
"""

"""Thin Dagster assets, one module per pipeline stage (ingest, kg, media, features, ...).

``pipeline`` (the Definitions) imports these modules and they import ``pipeline.config`` /
``pipeline.resources``; importing ``pipeline`` first here keeps that cycle well-ordered when a
caller (a test, a notebook) imports an asset module directly.
"""

import pipeline  # noqa: F401  (see above: must come before any assets.* module)

"""The Dagster layer: every asset, asset check, run config and resource, one module per stage.

``pipeline`` (the floor above) builds the one ``Definitions`` from these modules; nothing here
imports ``pipeline``, and the pure packages below (``datasources``, ``features``, ``model``,
``warehouse``) import nothing from Dagster.
"""

"""Dagster wiring of the Multi-KG4Rec pipeline (``dagster job execute -m pipeline -j main``)."""

from pipeline.definitions import defs

__all__ = ["defs"]

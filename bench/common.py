"""What the bench scripts share: ``--set KEY=VALUE`` parsing, the lake and warehouse, spreads."""

from __future__ import annotations

import json


def parse_value(text: str):
    """A JSON value when the text is one (numbers, true/false, null, lists), else the text."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_settings(items: list[str]) -> dict:
    """``["lr=0.01", "graph=ckg"]`` → ``{"lr": 0.01, "graph": "ckg"}``."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE")
        out[key] = parse_value(value)
    return out


def lake_tables(data_dir, dataset: str) -> dict | None:
    """The lake tables of a dataset, or None after printing how to create them (exit code 2)."""
    import sys

    from model.data import read_lake_tables

    try:
        return read_lake_tables(data_dir, dataset)
    except FileNotFoundError as exc:
        print(f"error: the lake tables are missing: {exc}", file=sys.stderr)
        return None


def run_store(data_dir):
    """The warehouse's run tables (DuckDB is imported only where runs are recorded)."""
    from warehouse.cli import open_warehouse
    from warehouse.runs import RunStore

    return RunStore(open_warehouse(data_dir))


def spread(values: list[float]) -> str:
    """One value, its mean ± std when there are several, ``–`` when there is none."""
    if not values:
        return "–"
    return f"{values[0]:.4f}" if len(values) == 1 else mean_std(values)


def mean_std(values: list[float]) -> str:
    """``mean ± sample std`` with four decimals."""
    mean = sum(values) / len(values)
    std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
    return f"{mean:.4f} ± {std:.4f}"

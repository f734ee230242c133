"""Helpers that turn tables and stats into Dagster materialization metadata."""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping
from typing import Any

import dagster as dg
import pandas as pd
import pyarrow as pa


def table_schema(schema: pa.Schema) -> dg.TableSchema:
    return dg.TableSchema(columns=[dg.TableColumn(name=f.name, type=str(f.type)) for f in schema])


def markdown_table(frame: pd.DataFrame, max_rows: int = 5) -> str:
    frame = frame.head(max_rows)
    cells = frame.astype(object).where(frame.notna(), None)
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "| " + " | ".join("---" for _ in frame.columns) + " |"
    rows = ["| " + " | ".join(_cell(v) for v in row) + " |" for row in cells.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")[:80]


def table_metadata(data: pa.Table | pd.DataFrame, path: Any = None, sample_rows: int = 5) -> dict[str, Any]:
    """Row count, column schema, a few sample rows and the file path of a written table."""
    table = pa.Table.from_pandas(data, preserve_index=False) if isinstance(data, pd.DataFrame) else data
    meta: dict[str, Any] = {
        "dagster/row_count": table.num_rows,
        "dagster/column_schema": table_schema(table.schema),
        "sample": dg.MetadataValue.md(markdown_table(table.slice(0, sample_rows).to_pandas())),
    }
    if path is not None:
        meta["path"] = dg.MetadataValue.path(str(path))
    return meta


def stats_markdown(stats: Mapping[str, Any], title: str | None = None) -> dg.MetadataValue:
    lines = [f"**{title}**", ""] if title else []
    lines += ["| statistic | value |", "| --- | --- |"]
    for key, value in stats.items():
        shown = f"{value:,.6g}" if isinstance(value, float) else (f"{value:,}" if isinstance(value, int) else str(value))
        lines.append(f"| {key} | {shown} |")
    return dg.MetadataValue.md("\n".join(lines))


def check_result(problems: list[str], **metadata: Any) -> dg.AssetCheckResult:
    """An asset check result that passes when ``problems`` is empty and lists them otherwise."""
    return dg.AssetCheckResult(
        passed=not problems,
        metadata={"problems": dg.MetadataValue.md("\n".join(f"- {p}" for p in problems) or "none"), **metadata},
    )


def png_markdown(figure, alt: str) -> dg.MetadataValue:
    """Embed a matplotlib figure as a picture (Dagster has no image metadata type)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    encoded = base64.b64encode(buffer.getvalue()).decode()
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{encoded})")

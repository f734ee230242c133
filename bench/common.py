"""What the bench scripts share: ``--set KEY=VALUE`` parsing."""

from __future__ import annotations

import json


def parse_value(text: str):
    """A JSON value when the text is one (numbers, true/false, null, lists), else the text."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_settings(items: list[str]) -> dict:
    """``["lr=0.01", "graph=ckg"]`` → ``{"lr": 0.01, "graph": "ckg"}``."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE")
        out[key] = parse_value(value)
    return out

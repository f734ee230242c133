"""Names and values as they may reach SQL: validated table names, quoted identifiers and literals."""

from __future__ import annotations

import re

#: What a lake table may be called: the names the pipeline writes. A file named otherwise (by
#: accident or by an attacker who can write into the lake) gets no view: names reach SQL.
TABLE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


def quote_identifier(name: str) -> str:
    """``name`` as a DuckDB identifier (double quotes, embedded quotes doubled)."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    """``value`` as a SQL string literal (single quotes, embedded quotes doubled)."""
    return "'" + value.replace("'", "''") + "'"

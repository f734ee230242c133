"""Freebase-style triples from Wikidata, looked up by Freebase MID (property P646).

The Freebase dump the paper's KG was cut from is gone, and the KB4Rec subgraph for ML-1M is not
staged; but Wikidata still records the Freebase id of most films, people, genres and books
(P646). So for every linked item MID we ask Wikidata's SPARQL endpoint for a fixed set of
properties and return them as ``head_key = <item MID>``, ``relation_key = <Freebase-style
relation name>``, ``tail_key = <tail MID when Wikidata knows one, else wd:Q...>``. Tails that are
Freebase MIDs line up with the rest of the Freebase-keyed KG (names file, links).

Note on identifiers: Wikidata stores P646 values in Freebase's *path* form ``/m/0dyb1``; this
module converts to and from the dotted MID form ``m.0dyb1`` that every other file in the project
uses.

Politeness (https://www.mediawiki.org/wiki/Wikidata_Query_Service/User_Manual): one request at
a time, at least ``min_interval_s`` between request starts, the HttpClient's identifying
User-Agent, retries with ``Retry-After`` (done by :class:`datasources.http.HttpClient`), and an
on-disk cache per batch so a re-run sends nothing.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from datasources.errors import DownloadError
from datasources.http import HttpClient
from datasources.kg.readers import NAME_COLUMNS, TRIPLE_COLUMNS, Triples
from warehouse.files import atomic_write_json

__all__ = [
    "BOOK_PROPERTIES",
    "DEFAULT_PROPERTIES",
    "FILM_PROPERTIES",
    "RELATION_KINDS",
    "WIKIDATA_SPARQL",
    "WikidataClient",
    "build_query",
    "mid_to_wikidata",
    "parse_sparql_results",
    "wikidata_to_mid",
]

WIKIDATA_SPARQL = "https://query.wikidata.org/sparql"

#: Freebase film relations and the Wikidata properties that carry the same facts.
FILM_PROPERTIES: dict[str, str] = {
    "film.film.directed_by": "P57",
    "film.film.genre": "P136",
    "film.film.written_by": "P58",
    "film.film.starring": "P161",
    "film.film.country": "P495",
    "film.film.language": "P364",
    "film.film.production_company": "P272",
}
#: The same for books (Amazon-Books). P136 appears here too, so the two sets are kept apart:
#: one mapping may use each property once (see :func:`_pid_to_relation`).
BOOK_PROPERTIES: dict[str, str] = {
    "book.written_work.author": "P50",
    "book.book.genre": "P136",
    "book.written_work.subjects": "P921",
    "book.written_work.original_language": "P407",
    "book.written_work.part_of_series": "P179",
}
DEFAULT_PROPERTIES: dict[str, str] = FILM_PROPERTIES

#: Entity kind of a relation's tail, used for the ``kind`` column of the returned names.
RELATION_KINDS: dict[str, str] = {
    "film.film.directed_by": "director",
    "film.film.genre": "genre",
    "film.film.written_by": "writer",
    "film.film.starring": "actor",
    "film.film.country": "country",
    "film.film.language": "language",
    "film.film.production_company": "production",
    "book.written_work.author": "writer",
    "book.book.genre": "genre",
    "book.written_work.subjects": "subject",
    "book.written_work.original_language": "language",
    "book.written_work.part_of_series": "series",
}

_MID_RE = re.compile(r"^([mg])\.([0-9a-z_]+)$")
_FB_PATH_RE = re.compile(r"^/([mg])/([0-9a-z_]+)$")
_PID_RE = re.compile(r"^P[1-9]\d*$")
_ENTITY_PREFIX = "http://www.wikidata.org/entity/"
_PROP_PREFIX = "http://www.wikidata.org/prop/direct/"
_QUERY_VERSION = "1"  # bump when the query's shape changes, so old cache entries are not reused


def mid_to_wikidata(mid: str) -> str:
    """``m.0dyb1`` → ``/m/0dyb1`` (the form Wikidata stores in P646)."""
    match = _MID_RE.match(mid)
    if not match:
        raise ValueError(f"not a Freebase MID: {mid!r}")
    return f"/{match.group(1)}/{match.group(2)}"


def wikidata_to_mid(value: str) -> str | None:
    """``/m/0dyb1`` → ``m.0dyb1``; ``None`` for anything else."""
    match = _FB_PATH_RE.match(value)
    return f"{match.group(1)}.{match.group(2)}" if match else None


def _pid_to_relation(properties: Mapping[str, str]) -> dict[str, str]:
    """Invert ``relation_key -> pid``; a property used twice would be ambiguous and is refused."""
    inverse: dict[str, str] = {}
    for relation, pid in properties.items():
        if not _PID_RE.match(pid):
            raise ValueError(f"not a Wikidata property id: {pid!r} (for {relation!r})")
        if pid in inverse:
            raise ValueError(
                f"property {pid} is mapped by both {inverse[pid]!r} and {relation!r}; "
                "use one mapping per domain (FILM_PROPERTIES, BOOK_PROPERTIES)"
            )
        inverse[pid] = relation
    return inverse


def build_query(mids: Iterable[str], pids: Iterable[str]) -> str:
    """SPARQL for the given MIDs and property ids (both emitted sorted, so text is stable).

    Selects the requested MID, the property, the value, the value's own Freebase id (when it has
    one) and its English label. Only validated MIDs/pids are interpolated (no injection).
    """
    fb = " ".join(f'"{mid_to_wikidata(m)}"' for m in sorted(set(mids)))
    pid_list = sorted(set(pids))
    for p in pid_list:
        if not _PID_RE.match(p):
            raise ValueError(f"not a Wikidata property id: {p!r}")
    props = " ".join(f"wdt:{p}" for p in pid_list)
    return (
        "SELECT ?fb ?p ?value ?valueFb ?valueLabel WHERE {\n"
        f"  VALUES ?fb {{ {fb} }}\n"
        f"  VALUES ?p {{ {props} }}\n"
        "  ?item wdt:P646 ?fb .\n"
        "  ?item ?p ?value .\n"
        "  OPTIONAL { ?value wdt:P646 ?valueFb . }\n"
        '  OPTIONAL { ?value rdfs:label ?valueLabel . FILTER(LANG(?valueLabel) = "en") }\n'
        "}"
    )


def parse_sparql_results(
    payload: Any, pid_to_relation: Mapping[str, str]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Turn a SPARQL JSON result (W3C "SPARQL 1.1 Query Results JSON Format") into frames.

    Returns ``(triples, names)``. Rows whose value is a literal (not a Wikidata item) or whose
    property is not in ``pid_to_relation`` are skipped. When a value has several Freebase ids
    (Wikidata merges), the smallest is used so the result is deterministic.
    """
    try:
        bindings = payload["results"]["bindings"]
    except (TypeError, KeyError) as exc:
        raise DownloadError(f"unexpected SPARQL response (no results.bindings): {exc!r}") from None

    def value_of(row: Mapping[str, Any], var: str) -> tuple[str | None, str | None]:
        cell = row.get(var)
        if not isinstance(cell, Mapping):
            return None, None
        return cell.get("type"), cell.get("value")

    rows: list[tuple[str, str, str, str | None, str | None]] = []
    for row in bindings:
        _, fb = value_of(row, "fb")
        _, p = value_of(row, "p")
        vtype, value = value_of(row, "value")
        _, value_fb = value_of(row, "valueFb")
        _, label = value_of(row, "valueLabel")
        head = wikidata_to_mid(fb or "")
        pid = (p or "").removeprefix(_PROP_PREFIX)
        if head is None or pid not in pid_to_relation:
            continue
        if vtype != "uri" or not value or not value.startswith(_ENTITY_PREFIX):
            continue  # literal / non-item value: not an entity
        qid = "wd:" + value[len(_ENTITY_PREFIX) :]
        rows.append((head, pid_to_relation[pid], qid, wikidata_to_mid(value_fb or ""), label))

    df = pd.DataFrame(rows, columns=["head_key", "relation_key", "qid", "tail_mid", "label"])
    # One tail key per Wikidata item: its smallest Freebase MID, else its Q-id.
    tail_for_qid = df.dropna(subset=["tail_mid"]).groupby("qid")["tail_mid"].min()
    df["tail_key"] = df["qid"].map(tail_for_qid).fillna(df["qid"])
    triples = df.loc[:, TRIPLE_COLUMNS].drop_duplicates().reset_index(drop=True).astype(object)
    labelled = df.dropna(subset=["label"]).sort_values(["tail_key", "label"], kind="stable")
    names = pd.DataFrame(
        {
            "entity_key": labelled["tail_key"],
            "name": labelled["label"],
            "kind": labelled["relation_key"].map(RELATION_KINDS).fillna("wikidata"),
        }
    ).drop_duplicates("entity_key")
    return triples, names.loc[:, NAME_COLUMNS].reset_index(drop=True).astype(object)


class WikidataClient:
    """Batched, rate-limited, cached SPARQL lookups of Freebase MIDs on Wikidata.

    Args:
        http: the project's :class:`~datasources.http.HttpClient` (retries, timeouts, UA).
        endpoint: SPARQL endpoint URL.
        batch_size: MIDs per query (``VALUES`` list); 200 keeps the GET URL a few KB.
        min_interval_s: minimum seconds between the *starts* of two requests.
        cache_dir: where one JSON file per batch is kept; default ``<http.cache_dir>/wikidata``.
        clock, sleep: injectable for tests.

    After each :meth:`triples_for_mids` call, :attr:`last_stats` holds ``n_batches``,
    ``n_requests``, ``n_cache_hits`` and ``n_bindings``.
    """

    def __init__(
        self,
        http: HttpClient,
        endpoint: str = WIKIDATA_SPARQL,
        batch_size: int = 200,
        min_interval_s: float = 1.0,
        cache_dir: str | Path | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if min_interval_s < 0:
            raise ValueError("min_interval_s must be >= 0")
        self.http = http
        self.endpoint = endpoint
        self.batch_size = batch_size
        self.min_interval_s = min_interval_s
        self.cache_dir = Path(cache_dir) if cache_dir is not None else http.cache_dir / "wikidata"
        self._clock = clock
        self._sleep = sleep
        self._last_start: float | None = None
        self.last_stats: dict[str, int] = {}

    # -- public ------------------------------------------------------------------------------

    def triples_for_mids(
        self, mids: Iterable[str], properties: Mapping[str, str] = DEFAULT_PROPERTIES
    ) -> Triples:
        """Triples (and English tail labels) for ``mids`` over ``properties``.

        ``properties`` maps relation keys to Wikidata property ids. MIDs are de-duplicated and
        sorted before batching, so the batches (and their cache keys) do not depend on input
        order. Returns :class:`~datasources.kg.readers.Triples` with head keys = the MIDs.
        """
        pid_to_relation = _pid_to_relation(properties)
        unique = sorted(set(mids))
        for mid in unique:
            mid_to_wikidata(mid)  # validate everything before the first request
        pids = sorted(pid_to_relation)
        stats = {"n_batches": 0, "n_requests": 0, "n_cache_hits": 0, "n_bindings": 0}
        triple_parts: list[pd.DataFrame] = []
        name_parts: list[pd.DataFrame] = []
        for start in range(0, len(unique), self.batch_size):
            batch = unique[start : start + self.batch_size]
            query = build_query(batch, pids)
            payload, from_cache = self._cached_query(query)
            stats["n_batches"] += 1
            stats["n_cache_hits" if from_cache else "n_requests"] += 1
            stats["n_bindings"] += len(payload.get("results", {}).get("bindings", []))
            triples, names = parse_sparql_results(payload, pid_to_relation)
            triple_parts.append(triples)
            name_parts.append(names)
        self.last_stats = stats
        if not triple_parts:
            return Triples(
                pd.DataFrame(columns=TRIPLE_COLUMNS, dtype=object),
                pd.DataFrame(columns=NAME_COLUMNS, dtype=object),
            )
        triples = pd.concat(triple_parts, ignore_index=True).drop_duplicates()
        names = pd.concat(name_parts, ignore_index=True).drop_duplicates("entity_key")
        return Triples(triples.reset_index(drop=True), names.reset_index(drop=True))

    def query(self, sparql: str) -> Any:
        """Run one SPARQL query (rate-limited, not cached) and return the decoded JSON."""
        self._throttle()
        return self.http.get_json(
            self.endpoint,
            params={"query": sparql, "format": "json"},
            headers={"Accept": "application/sparql-results+json"},
        )

    # -- internals ---------------------------------------------------------------------------

    def cache_path(self, sparql: str) -> Path:
        """Cache file of a query: sha256 of the query text (sorted MIDs and pids inside)."""
        digest = hashlib.sha256(f"{_QUERY_VERSION}\n{sparql}".encode()).hexdigest()
        return self.cache_dir / f"{digest[:32]}.json"

    def _cached_query(self, sparql: str) -> tuple[Any, bool]:
        path = self.cache_path(sparql)
        if path.exists():
            try:
                return json.loads(path.read_text(encoding="utf-8")), True
            except (OSError, ValueError):
                pass  # unreadable/corrupt cache entry: fetch again and overwrite it
        payload = self.query(sparql)
        if not isinstance(payload, Mapping) or not isinstance(payload.get("results"), Mapping):
            raise DownloadError(f"unexpected SPARQL response from {self.endpoint}")
        self._write_cache(path, payload)
        return payload, False

    def _write_cache(self, path: Path, payload: Any) -> None:
        # Atomic: a crash mid-write must not leave a truncated entry that a re-run would trust.
        atomic_write_json(path, payload)

    def _throttle(self) -> None:
        now = self._clock()
        if self._last_start is not None:
            wait = self.min_interval_s - (now - self._last_start)
            if wait > 0:
                self._sleep(wait)
                now = self._clock()
        self._last_start = now

"""Knowledge-graph construction for Multi-KG4Rec, free of Dagster.

* :mod:`.readers` — item→entity link files (KB4Rec, RecBole, KGAT, MKR), triple files (KGAT
  ``kg_final``, RecBole ``.kg``, MKR ``kg.txt``) and Freebase names/types.
* :mod:`.metadata` — attribute triples from side information (MovieLens genres/year, OMDb,
  Amazon categories).
* :mod:`.wikidata` — Freebase-style triples fetched from Wikidata by Freebase MID (online).
* :mod:`.build` — merging everything into the id-mapped tables ``item_links``, ``entities``,
  ``relations``, ``kg_triples`` with Table-1 statistics, and the invariant check.

``wikidata`` is not imported here so that offline users do not import the HTTP stack.
"""

from datasources.kg.attributes import (
    amazon_category_triples,
    movielens_metadata_triples,
    omdb_triples,
    read_omdb_metadata,
    read_recbole_item_titles,
)
from datasources.kg.build import KGBuildOptions, KGResult, build_kg, validate_kg
from datasources.kg.readers import (
    Triples,
    read_freebase_names,
    read_freebase_types,
    read_item_index2entity_id,
    read_kb4rec_links,
    read_kgat_item_list,
    read_kgat_kg_final,
    read_kgat_remap_list,
    read_mkr_kg,
    read_recbole_kg,
    read_recbole_link,
)

__all__ = [
    "KGBuildOptions",
    "KGResult",
    "Triples",
    "amazon_category_triples",
    "build_kg",
    "movielens_metadata_triples",
    "omdb_triples",
    "read_freebase_names",
    "read_freebase_types",
    "read_item_index2entity_id",
    "read_kb4rec_links",
    "read_kgat_item_list",
    "read_kgat_kg_final",
    "read_kgat_remap_list",
    "read_mkr_kg",
    "read_omdb_metadata",
    "read_recbole_item_titles",
    "read_recbole_kg",
    "read_recbole_link",
    "validate_kg",
]

"""Run-result tables: one Parquet file per run (or trial) under ``<lake>/runs/<table>/``.

Storage choice: immutable per-run files, never a shared database file. Results are written once
per run and read across datasets and variants; a file per ``run_id`` makes re-recording a run
idempotent (the file is replaced atomically) and keeps history, and — the reason it is not a
DuckDB table — no writer ever needs a lock that a reader can hold: a user's open
``duckdb data/warehouse.duckdb`` cannot fail a training run. Reads go through an in-memory
DuckDB over the files; ``warehouse.duckdb`` carries the same views for users
(:func:`run_views`). A run's metrics file is written before its ``training_runs`` file, so a
run is visible only once it is complete. Every line of SQL about runs lives here.

Tables (key columns are the project contract, more columns are welcome)

* ``training_runs(run_id, dataset, variant, config_json, code_version, device, seconds,
  checkpoint_path, …)`` — one row per run (plus config hash, best epoch, timings, finish time
  and ``lake_version``: the lake snapshot it trained on, see ``Lake.snapshot(dataset, n)``).
* ``metrics(run_id, split, metric, k, value, epoch, slice)`` — final results have ``epoch`` NULL
  (``split`` = test or valid, at the best epoch); learning curves have the epoch
  (``split`` = train for losses with ``k`` NULL, valid for validation metrics); ``slice`` is
  ``all`` or a final result restricted to ``items:head``/``items:tail`` (20 % most / 80 % least
  interacted TRAIN items) or ``users:q1``…``users:q4`` (TRAIN-activity quartiles, q1 least),
  with metric ``users`` = the slice's evaluated users.
* ``recommendations(run_id, user_id, rank, item_id, score)`` — top-k unseen items per user.
* ``modality_preferences(run_id, user_id, visual_weight, text_weight)`` — Fig. 4.
* ``paper_tables(paper_table, dataset, row_order, row_label, variant, run_id, recall, mrr,
  ndcg, improvement_recall, improvement_mrr, improvement_ndcg)`` — Tables 2–4 over the
  latest run of every dataset × variant, rebuilt by :meth:`RunStore.rebuild_paper_tables`.
* ``tuning_trials(study, dataset, variant, trial, run_id, config_hash, params_json,
  valid_recall, valid_ndcg, best_epoch, seconds, chosen)`` — hyperparameter-search trials
  (bench/tune.py), scored on validation only; ``chosen`` marks each study's winner.
* view ``latest_runs`` — the latest finished run per (dataset, variant, preset) that reports a
  test result (search trials are left out); ``preset`` is NULL for a variant's own settings.
* view ``paper_runs`` — the run per (dataset, variant) that ``paper_tables`` reads: the latest
  without a preset, else the latest with one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from warehouse.database import Warehouse
from warehouse.files import atomic_path
from warehouse.sql import quote_identifier, quote_literal


def _columns(spec: str) -> dict[str, str]:
    return dict(item.split() for item in spec.split(","))


#: Column types of every run table (the file schema; a missing column is written as NULL).
RUN_TABLES: dict[str, dict[str, str]] = {
    "training_runs": _columns(
        "run_id VARCHAR, dataset VARCHAR, variant VARCHAR, config_json VARCHAR, "
        "config_hash VARCHAR, code_version VARCHAR, device VARCHAR, seconds DOUBLE, "
        "seconds_per_epoch DOUBLE, eval_seconds DOUBLE, best_epoch INTEGER, epochs_run INTEGER, "
        "stopped VARCHAR, n_parameters BIGINT, checkpoint_path VARCHAR, source VARCHAR, "
        "lake_version INTEGER, finished_at TIMESTAMP"),
    "metrics": _columns("run_id VARCHAR, split VARCHAR, metric VARCHAR, k INTEGER, value DOUBLE, "
                        "epoch INTEGER, slice VARCHAR"),
    "recommendations": _columns("run_id VARCHAR, user_id BIGINT, rank INTEGER, item_id BIGINT, "
                                "score DOUBLE"),
    "modality_preferences": _columns("run_id VARCHAR, user_id BIGINT, visual_weight DOUBLE, "
                                     "text_weight DOUBLE, n_items INTEGER"),
    "tuning_trials": _columns("study VARCHAR, dataset VARCHAR, variant VARCHAR, trial INTEGER, "
                              "run_id VARCHAR, config_hash VARCHAR, params_json VARCHAR, "
                              "valid_recall DOUBLE, valid_ndcg DOUBLE, best_epoch INTEGER, "
                              "seconds DOUBLE"),
    "tuning_choices": _columns("study VARCHAR, dataset VARCHAR, config_hash VARCHAR"),
    "paper_tables": _columns("paper_table VARCHAR, dataset VARCHAR, row_order INTEGER, "
                             "row_label VARCHAR, variant VARCHAR, run_id VARCHAR, recall DOUBLE, "
                             "mrr DOUBLE, ndcg DOUBLE, improvement_recall DOUBLE, "
                             "improvement_mrr DOUBLE, improvement_ndcg DOUBLE"),
}
RUN_COLUMNS = [c for c in RUN_TABLES["training_runs"] if c not in ("lake_version", "finished_at")]
METRIC_COLUMNS = list(RUN_TABLES["metrics"])

#: Views over the run tables, in dependency order: (name, tables it needs, SQL).
DERIVED_RUN_VIEWS: list[tuple[str, tuple[str, ...], str]] = [
    # search trials (source 'tune') are evaluated on validation only: the paper tables and
    # "latest run" read the runs that report a test result
    # a preset (``preset: paper``) is another model of the same variant: it has its own row
    ("latest_runs", ("training_runs",), """
        SELECT * EXCLUDE (rn) FROM (
            SELECT *, row_number() OVER (PARTITION BY dataset, variant, preset
                                         ORDER BY finished_at DESC, run_id DESC) AS rn
            FROM (SELECT *, CASE WHEN json_valid(config_json)
                                 THEN json_extract_string(config_json, '$.preset') END AS preset
                  FROM training_runs WHERE coalesce(source, '') <> 'tune'))
        WHERE rn = 1"""),
    # what the paper tables read per dataset × variant: the latest run without a preset, or
    # the latest preset run where the variant has only those
    ("paper_runs", ("training_runs",), """
        SELECT * FROM latest_runs
        QUALIFY row_number() OVER (PARTITION BY dataset, variant
                                   ORDER BY preset IS NOT NULL, finished_at DESC,
                                            run_id DESC) = 1"""),
]
_TRIALS_WITH_CHOICE = """
    SELECT t.*, coalesce(t.config_hash = c.config_hash, false) AS chosen
    FROM tuning_trial_rows t LEFT JOIN tuning_choices c USING (study, dataset)"""


def _file_key(*parts: str) -> str:
    """A file name from ids (run ids, study names): anything but [A-Za-z0-9._-] becomes '_'."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", "__".join(parts))


def run_views(runs_root: Path) -> list[tuple[str, str]]:
    """(view name, SQL) for every run table that has files under ``runs_root``, plus the
    derived views whose inputs exist: what ``warehouse.duckdb`` shows users."""
    present = {t for t in RUN_TABLES if any((runs_root / t).glob("*.parquet"))}
    views = []
    for table in RUN_TABLES:
        if table not in present:
            continue
        # every declared column, also over files written before a column existed (NULL there)
        declared = ", ".join(f"NULL::{kind} AS {name}" for name, kind in RUN_TABLES[table].items())
        scan = (f"SELECT * FROM read_parquet({quote_literal((runs_root / table).as_posix() + '/*.parquet')}, "
                f"union_by_name = true) UNION ALL BY NAME SELECT {declared} WHERE false")
        if table == "tuning_trials":
            views.append(("tuning_trial_rows", scan))
            if "tuning_choices" not in present:
                views.append(("tuning_trials", "SELECT *, false AS chosen FROM tuning_trial_rows"))
                continue
            scan = None
        if scan is not None:
            views.append((table, scan))
    if {"tuning_trials", "tuning_choices"} <= present:
        views.append(("tuning_trials", _TRIALS_WITH_CHOICE))
    for name, needs, sql in DERIVED_RUN_VIEWS:
        if set(needs) <= present:
            views.append((name, sql))
    return views

#: The paper's tables: (table, row order, row label, variant, baseline variant of "Improv.").
#: Table 2 compares models; Table 3 modalities; Table 4 the Bi-Transformer. Their reference row
#: "w/o t&v" is what the full model becomes without modalities (:data:`WITHOUT_MODALITIES`).
WITHOUT_MODALITIES = "w/o t&v"
PAPER_ROWS: list[tuple[str, int, str, str, str | None]] = [
    ("Table 2", 1, "BPR-MF", "bprmf", None),
    ("Table 2", 2, "LightGCN", "lightgcn", None),
    ("Table 2", 3, "CKE", "cke", None),
    ("Table 2", 4, "KGAT", "kgat", None),
    ("Table 2", 5, "Multi-KG4Rec", "full", "best baseline"),
    ("Table 3", 1, "w/o t&v", WITHOUT_MODALITIES, None),
    ("Table 3", 2, "w/o v", "no_visual", WITHOUT_MODALITIES),
    ("Table 3", 3, "w/o t", "no_text", WITHOUT_MODALITIES),
    ("Table 3", 4, "Multi-KG4Rec", "full", WITHOUT_MODALITIES),
    ("Table 4", 1, "w/o t&v", WITHOUT_MODALITIES, None),
    ("Table 4", 2, "Bi-Trans t2v", "t2v", WITHOUT_MODALITIES),
    ("Table 4", 3, "Bi-Trans v2t", "v2t", WITHOUT_MODALITIES),
    ("Table 4", 4, "Multi-KG4Rec", "full", WITHOUT_MODALITIES),
]
PAPER_K = 20


class RunStore:
    """Writes and reads the run-result files of one lake (``<lake>/runs``)."""

    def __init__(self, warehouse: Warehouse) -> None:
        self.warehouse = warehouse
        self.root = warehouse.lake.root / "runs"

    # ------------------------------------------------------------------ writes

    def _write(self, table: str, key: str, frame: pd.DataFrame | pa.Table) -> int:
        """Write ``frame`` as ``runs/<table>/<key>.parquet`` with the table's column types."""
        types = RUN_TABLES[table]
        con = duckdb.connect()
        try:
            con.register("frame", frame)
            present = set(con.sql("SELECT * FROM frame LIMIT 0").columns)
            select = ", ".join(
                f"CAST({quote_identifier(c) if c in present else 'NULL'} AS {t}) AS {quote_identifier(c)}"
                for c, t in types.items())
            table_data = con.sql(f"SELECT {select} FROM frame").to_arrow_table()
        finally:
            con.close()
        first = not any((self.root / table).glob("*.parquet"))
        with atomic_path(self.root / table / f"{_file_key(key)}.parquet") as tmp:
            pq.write_table(table_data, tmp, compression="zstd")
        if first:  # a table new to the warehouse gets its view (best effort: never blocks)
            self.warehouse.ensure_views()
        return table_data.num_rows

    def record_run(self, run: dict, metrics: pd.DataFrame) -> None:
        """Write (or replace) one run and all its metric rows; the run row last, so a run is
        never visible without its metrics."""
        metric_rows = metrics.reindex(columns=METRIC_COLUMNS)
        metric_rows["run_id"] = run["run_id"]
        metric_rows["slice"] = metric_rows["slice"].fillna("all")
        self._write("metrics", run["run_id"], metric_rows)
        row = {c: run.get(c) for c in RUN_TABLES["training_runs"]}
        row["finished_at"] = run.get("finished_at") or pd.Timestamp.now(tz="UTC").tz_localize(None)
        self._write("training_runs", run["run_id"], pd.DataFrame([row]))

    def record_trial(self, trial: dict) -> None:
        """One hyperparameter-search trial (bench/tune.py), validation scores only."""
        row = {"study": trial["study"], "dataset": trial["dataset"], "variant": trial["variant"],
               "trial": trial["trial"], "run_id": trial["run_id"],
               "config_hash": trial["config_hash"], "params_json": json.dumps(trial["params"]),
               "valid_recall": trial["valid"]["recall@20"],
               "valid_ndcg": trial["valid"]["ndcg@20"], "best_epoch": trial["best_epoch"],
               "seconds": trial["seconds"]}
        self._write("tuning_trials", "__".join((trial["study"], trial["dataset"],
                                                trial["config_hash"])), pd.DataFrame([row]))

    def mark_chosen(self, study: str, dataset: str, config_hash: str) -> None:
        """The study's chosen configuration: the one trial with ``chosen``."""
        self._write("tuning_choices", f"{study}__{dataset}", pd.DataFrame(
            [{"study": study, "dataset": dataset, "config_hash": config_hash}]))

    def write_recommendations(self, run_id: str, frame: pd.DataFrame) -> int:
        return self._write("recommendations", run_id, frame.assign(run_id=run_id))

    def write_modality_preferences(self, run_id: str, frame: pd.DataFrame) -> int:
        return self._write("modality_preferences", run_id, frame.assign(run_id=run_id))

    # ------------------------------------------------------------------ reads

    @contextmanager
    def _reader(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """An in-memory DuckDB with a view per run table (empty, typed, when it has no file)."""
        con = duckdb.connect()
        try:
            views = dict(run_views(self.root))
            for table, types in RUN_TABLES.items():
                if table not in views and table != "tuning_trials":
                    columns = ", ".join(f'NULL::{t} AS "{c}"' for c, t in types.items())
                    views[table] = f"SELECT {columns} WHERE false"
            if "tuning_trials" not in views:
                views["tuning_trials"] = "SELECT *, false AS chosen FROM tuning_choices WHERE false"
            for name, _, sql in DERIVED_RUN_VIEWS:
                views.setdefault(name, sql)
            for name, sql in _dependency_order(views):
                con.execute(f'CREATE TEMP VIEW "{name}" AS {sql}')
            yield con
        finally:
            con.close()

    def query(self, sql: str, params: list | None = None) -> pa.Table:
        """Any read-only SQL over the run tables, without opening ``warehouse.duckdb``."""
        with self._reader() as con:
            return con.sql(sql, params=params or None).to_arrow_table()

    def _query(self, sql: str, params: list | None = None) -> pd.DataFrame:
        with self._reader() as con:
            return con.sql(sql, params=params or None).to_df()

    def latest_run(self, dataset: str, variant: str | None = None) -> dict | None:
        """The most recent run of a dataset (of one variant when given), as a dict."""
        sql = "SELECT * FROM training_runs WHERE dataset = ?"
        params: list = [dataset]
        if variant is not None:
            sql += " AND variant = ?"
            params.append(variant)
        with self._reader() as con:
            rows = con.sql(sql + " ORDER BY finished_at DESC, run_id DESC LIMIT 1",
                           params=params).to_arrow_table().to_pylist()
        return rows[0] if rows else None

    def final_metrics(self, run_id: str) -> pd.DataFrame:
        return self._query(
            "SELECT split, metric, k, value FROM metrics WHERE run_id = ? AND epoch IS NULL "
            "AND slice = 'all' ORDER BY split, metric, k", [run_id])

    def run_ids_named(self, dataset: str, variant: str, config_hash: str,
                      source: str = "tuned") -> list[str]:
        """The runs whose id carries ``config_hash`` (``new_run_id``'s name), newest first.

        A run's own ``config_hash`` column is the hash of what it trained (a replay's differs
        from the trial it replays); the id carries the hash the caller recorded it under."""
        rows = self._query(
            "SELECT run_id FROM training_runs WHERE dataset = ? AND variant = ? AND source = ? "
            "AND run_id LIKE ? ORDER BY finished_at DESC",
            [dataset, variant, source, f"%-{config_hash[:8]}-%"])
        return list(rows["run_id"])

    def slice_metrics(self, run_id: str, split: str = "test", k: int = 20) -> pd.DataFrame:
        """One row per slice of a run: recall, ndcg, mrr @k and the slice's user count."""
        return self._query("""
            SELECT slice,
                   max(value) FILTER (WHERE metric = 'recall' AND k = ?) AS recall,
                   max(value) FILTER (WHERE metric = 'ndcg' AND k = ?) AS ndcg,
                   max(value) FILTER (WHERE metric = 'mrr' AND k = ?) AS mrr,
                   max(value) FILTER (WHERE metric = 'users') AS users
            FROM metrics WHERE run_id = ? AND split = ? AND epoch IS NULL
            GROUP BY slice ORDER BY slice = 'all' DESC, slice""",
            [k, k, k, run_id, split])

    def curves(self, run_id: str) -> pd.DataFrame:
        return self._query(
            "SELECT split, metric, k, epoch, value FROM metrics "
            "WHERE run_id = ? AND epoch IS NOT NULL ORDER BY epoch", [run_id])

    def latest_runs(self) -> pd.DataFrame:
        return self._query(
            "SELECT run_id, dataset, variant, preset, device, seconds, seconds_per_epoch, "
            "best_epoch, lake_version, finished_at FROM latest_runs "
            "ORDER BY dataset, variant, preset NULLS FIRST")

    def modality_preferences(self, run_id: str) -> pd.DataFrame:
        return self._query(
            "SELECT user_id, visual_weight, text_weight, n_items FROM modality_preferences "
            "WHERE run_id = ? ORDER BY user_id", [run_id])

    def tuning_trials(self) -> pd.DataFrame:
        return self._query("SELECT * FROM tuning_trials ORDER BY study, dataset, trial")

    def rebuild_paper_tables(self) -> pd.DataFrame:
        """Recompute ``paper_tables`` from the latest run per dataset × variant (test, @20).

        Improv. = relative gain of the row over its reference row of the same table and
        dataset (Table 2: over the best baseline of each metric; Tables 3–4: over w/o t&v).
        """
        with self._reader() as con:
            con.register("paper_layout", self._paper_layout(con))
            frame = con.sql(f"""
                WITH final AS (
                    SELECT r.dataset, r.variant, r.run_id,
                           max(m.value) FILTER (WHERE m.metric = 'recall') AS recall,
                           max(m.value) FILTER (WHERE m.metric = 'mrr') AS mrr,
                           max(m.value) FILTER (WHERE m.metric = 'ndcg') AS ndcg
                    FROM paper_runs r JOIN metrics m USING (run_id)
                    WHERE m.split = 'test' AND m.epoch IS NULL AND m.k = {PAPER_K}
                      AND m.slice = 'all'
                    GROUP BY ALL
                ),
                rows AS (
                    SELECT l.paper_table, f.dataset, l.row_order, l.row_label, l.variant,
                           l.reference, f.run_id, f.recall, f.mrr, f.ndcg
                    FROM paper_layout l JOIN final f USING (dataset, variant)
                ),
                baseline AS (  -- Table 2: best non-Multi-KG4Rec row per metric
                    SELECT paper_table, dataset, max(recall) AS recall, max(mrr) AS mrr,
                           max(ndcg) AS ndcg
                    FROM rows WHERE paper_table = 'Table 2' AND variant <> 'full'
                    GROUP BY ALL
                )
                SELECT r.paper_table, r.dataset, r.row_order, r.row_label, r.variant,
                       r.run_id, r.recall, r.mrr, r.ndcg,
                       r.recall / nullif(coalesce(b.recall, ref.recall), 0) - 1,
                       r.mrr / nullif(coalesce(b.mrr, ref.mrr), 0) - 1,
                       r.ndcg / nullif(coalesce(b.ndcg, ref.ndcg), 0) - 1
                FROM rows r
                LEFT JOIN baseline b ON r.reference = 'best baseline'
                     AND b.paper_table = r.paper_table AND b.dataset = r.dataset
                LEFT JOIN rows ref ON ref.paper_table = r.paper_table
                     AND ref.dataset = r.dataset AND ref.variant = r.reference
                     AND ref.row_order = (SELECT min(row_order) FROM paper_layout p
                                          WHERE p.paper_table = r.paper_table
                                            AND p.dataset = r.dataset
                                            AND p.variant = r.reference)
                ORDER BY r.paper_table, r.dataset, r.row_order
            """).to_df()
        frame.columns = list(RUN_TABLES["paper_tables"])
        self._write("paper_tables", "current", frame)
        return self.paper_tables()

    @staticmethod
    def _paper_layout(con) -> pd.DataFrame:
        """PAPER_ROWS per dataset, "w/o t&v" resolved from the latest full run's settings: under
        the paper's propagation (graph = ckg) it is ``kgat``; under ours (graph = interactions)
        the model without modalities is exactly LightGCN, so it is ``lightgcn``."""
        graphs = dict(con.execute("""
            SELECT dataset, coalesce(json_extract_string(config_json, '$.graph'), 'ckg')
            FROM paper_runs WHERE variant = 'full'""").fetchall())
        datasets = [row[0] for row in con.execute(
            "SELECT DISTINCT dataset FROM paper_runs ORDER BY 1").fetchall()]
        rows = []
        for dataset in datasets:
            base = "lightgcn" if graphs.get(dataset) == "interactions" else "kgat"
            for table, order, label, variant, reference in PAPER_ROWS:
                rows.append((table, dataset, order, label,
                             base if variant == WITHOUT_MODALITIES else variant,
                             base if reference == WITHOUT_MODALITIES else reference))
        return pd.DataFrame(rows, columns=["paper_table", "dataset", "row_order", "row_label",
                                           "variant", "reference"])

    def paper_tables(self) -> pd.DataFrame:
        return self._query("SELECT * FROM paper_tables ORDER BY paper_table, dataset, row_order")


def _dependency_order(views: dict[str, str]) -> list[tuple[str, str]]:
    """Views before the views that read them (tuning_trials reads tuning_trial_rows & co.)."""
    derived = {"tuning_trials", *(name for name, _, _ in DERIVED_RUN_VIEWS)}
    return ([(n, s) for n, s in views.items() if n not in derived]
            + [(n, s) for n, s in views.items() if n in derived])


def migrate_legacy_tables(con: duckdb.DuckDBPyConnection, runs_root: Path) -> list[str]:
    """Move run tables of a warehouse written before run results became files into
    ``runs_root`` (one ``legacy-warehouse.parquet`` per table) and drop them, so their names
    are free for the views. Runs on the connection that holds the write lock; returns the
    tables it moved."""
    tables = {row[0] for row in con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() "
        "AND schema_name = 'main'").fetchall()}
    moved = []
    for table in [t for t in RUN_TABLES if t in tables]:
        if table == "tuning_trials":
            _copy_to_file(con, "SELECT * EXCLUDE (chosen) FROM tuning_trials",
                          runs_root / "tuning_trials" / "legacy-warehouse.parquet")
            _copy_to_file(con, "SELECT study, dataset, config_hash FROM tuning_trials WHERE chosen",
                          runs_root / "tuning_choices" / "legacy-warehouse.parquet")
        else:
            name = "current" if table == "paper_tables" else "legacy-warehouse"
            _copy_to_file(con, f'SELECT * FROM "{table}"', runs_root / table / f"{name}.parquet")
        moved.append(table)
    con.execute("DROP VIEW IF EXISTS latest_runs")
    for table in moved:
        con.execute(f'DROP TABLE "{table}"')
    return moved


def _copy_to_file(con: duckdb.DuckDBPyConnection, sql: str, target: Path) -> None:
    frame = con.sql(sql).to_arrow_table()
    if frame.num_rows == 0:
        return
    with atomic_path(target) as tmp:
        pq.write_table(frame, tmp, compression="zstd")

"""Run-result tables in the DuckDB warehouse: every line of SQL about training runs.

Storage choice: real DuckDB tables (not lake Parquet), appended once per run. Run results are
small, are written once per run by one process, and are queried across datasets and variants
(the paper tables); a table keyed by ``run_id`` makes re-materializing a run idempotent
(DELETE + INSERT in one transaction) and keeps history, which per-partition Parquet files
overwritten in place would not.

Tables (key columns are the project contract, more columns are welcome)

* ``training_runs(run_id, dataset, variant, config_json, code_version, device, seconds,
  checkpoint_path, …)`` — one row per run (plus config hash, best epoch, timings, finish time).
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
* view ``latest_runs`` — the latest finished run per (dataset, variant) that reports a test
  result (search trials are left out).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import pandas as pd
import pyarrow as pa

from warehouse.database import Warehouse

SCHEMA = [
    """
    CREATE TABLE IF NOT EXISTS training_runs (
        run_id VARCHAR PRIMARY KEY,
        dataset VARCHAR NOT NULL,
        variant VARCHAR NOT NULL,
        config_json VARCHAR,
        config_hash VARCHAR,
        code_version VARCHAR,
        device VARCHAR,
        seconds DOUBLE,
        seconds_per_epoch DOUBLE,
        eval_seconds DOUBLE,
        best_epoch INTEGER,
        epochs_run INTEGER,
        stopped VARCHAR,
        n_parameters BIGINT,
        checkpoint_path VARCHAR,
        source VARCHAR,
        finished_at TIMESTAMP DEFAULT current_timestamp
    )""",
    """
    CREATE TABLE IF NOT EXISTS metrics (
        run_id VARCHAR NOT NULL,
        split VARCHAR NOT NULL,
        metric VARCHAR NOT NULL,
        k INTEGER,
        value DOUBLE,
        epoch INTEGER,
        slice VARCHAR DEFAULT 'all'
    )""",
    # warehouses created before slices existed
    "ALTER TABLE metrics ADD COLUMN IF NOT EXISTS slice VARCHAR DEFAULT 'all'",
    """
    CREATE TABLE IF NOT EXISTS recommendations (
        run_id VARCHAR NOT NULL,
        user_id BIGINT NOT NULL,
        rank INTEGER NOT NULL,
        item_id BIGINT NOT NULL,
        score DOUBLE
    )""",
    """
    CREATE TABLE IF NOT EXISTS modality_preferences (
        run_id VARCHAR NOT NULL,
        user_id BIGINT NOT NULL,
        visual_weight DOUBLE,
        text_weight DOUBLE,
        n_items INTEGER
    )""",
    """
    CREATE TABLE IF NOT EXISTS paper_tables (
        paper_table VARCHAR,
        dataset VARCHAR,
        row_order INTEGER,
        row_label VARCHAR,
        variant VARCHAR,
        run_id VARCHAR,
        recall DOUBLE,
        mrr DOUBLE,
        ndcg DOUBLE,
        improvement_recall DOUBLE,
        improvement_mrr DOUBLE,
        improvement_ndcg DOUBLE
    )""",
    """
    CREATE TABLE IF NOT EXISTS tuning_trials (
        study VARCHAR NOT NULL,
        dataset VARCHAR NOT NULL,
        variant VARCHAR NOT NULL,
        trial INTEGER,
        run_id VARCHAR,
        config_hash VARCHAR NOT NULL,
        params_json VARCHAR,
        valid_recall DOUBLE,
        valid_ndcg DOUBLE,
        best_epoch INTEGER,
        seconds DOUBLE,
        chosen BOOLEAN DEFAULT false
    )""",
    # search trials (source 'tune') are evaluated on validation only: the paper tables and
    # "latest run" read the runs that report a test result
    """
    CREATE OR REPLACE VIEW latest_runs AS
    SELECT * EXCLUDE (rn) FROM (
        SELECT *, row_number() OVER (PARTITION BY dataset, variant
                                     ORDER BY finished_at DESC, run_id DESC) AS rn
        FROM training_runs WHERE coalesce(source, '') <> 'tune')
    WHERE rn = 1
    """,
]

RUN_COLUMNS = ["run_id", "dataset", "variant", "config_json", "config_hash", "code_version",
               "device", "seconds", "seconds_per_epoch", "eval_seconds", "best_epoch",
               "epochs_run", "stopped", "n_parameters", "checkpoint_path", "source"]
METRIC_COLUMNS = ["run_id", "split", "metric", "k", "value", "epoch", "slice"]

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
    """Writes and reads the run-result tables of one :class:`Warehouse`."""

    def __init__(self, warehouse: Warehouse) -> None:
        self.warehouse = warehouse

    def ensure_schema(self) -> None:
        with self.warehouse.connect() as con:
            for statement in SCHEMA:
                con.execute(statement)

    # ------------------------------------------------------------------ writes

    def record_run(self, run: dict, metrics: pd.DataFrame) -> None:
        """Insert (or replace) one run and all its metric rows, in one transaction."""
        self.ensure_schema()
        row = pd.DataFrame([{c: run.get(c) for c in RUN_COLUMNS}])
        metric_rows = metrics.reindex(columns=METRIC_COLUMNS)
        metric_rows["run_id"] = run["run_id"]
        metric_rows = metric_rows.astype({"k": "Int64", "epoch": "Int64", "value": "float64"})
        with self.warehouse.transaction() as con:
            con.execute("DELETE FROM metrics WHERE run_id = ?", [run["run_id"]])
            con.execute("DELETE FROM training_runs WHERE run_id = ?", [run["run_id"]])
            con.register("run_row", row)
            con.execute(f"INSERT INTO training_runs ({', '.join(RUN_COLUMNS)}) "
                        f"SELECT {', '.join(RUN_COLUMNS)} FROM run_row")
            con.register("metric_rows", metric_rows)
            con.execute(f"INSERT INTO metrics ({', '.join(METRIC_COLUMNS)}) "
                        f"SELECT {', '.join(METRIC_COLUMNS)} FROM metric_rows")

    def record_trial(self, trial: dict) -> None:
        """One hyperparameter-search trial (bench/tune.py), validation scores only."""
        self.ensure_schema()
        with self.warehouse.transaction() as con:
            con.execute(
                "INSERT INTO tuning_trials (study, dataset, variant, trial, run_id, config_hash, "
                "params_json, valid_recall, valid_ndcg, best_epoch, seconds) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [trial["study"], trial["dataset"], trial["variant"], trial["trial"],
                 trial["run_id"], trial["config_hash"], json.dumps(trial["params"]),
                 trial["valid"]["recall@20"], trial["valid"]["ndcg@20"], trial["best_epoch"],
                 trial["seconds"]])

    def mark_chosen(self, study: str, dataset: str, config_hash: str) -> None:
        """The study's chosen configuration: the one row with ``chosen``."""
        self.ensure_schema()
        with self.warehouse.transaction() as con:
            con.execute("UPDATE tuning_trials SET chosen = (config_hash = ?) "
                        "WHERE study = ? AND dataset = ?", [config_hash, study, dataset])

    def _replace_rows(self, table: str, run_id: str, frame: pd.DataFrame | pa.Table,
                      columns: Sequence[str]) -> int:
        self.ensure_schema()
        with self.warehouse.transaction() as con:
            con.execute(f"DELETE FROM {table} WHERE run_id = ?", [run_id])
            con.register("new_rows", frame)
            con.execute(f"INSERT INTO {table} ({', '.join(columns)}) "
                        f"SELECT {', '.join(columns)} FROM new_rows")
        return len(frame)

    def write_recommendations(self, run_id: str, frame: pd.DataFrame) -> int:
        frame = frame.assign(run_id=run_id)
        return self._replace_rows("recommendations", run_id, frame,
                                  ["run_id", "user_id", "rank", "item_id", "score"])

    def write_modality_preferences(self, run_id: str, frame: pd.DataFrame) -> int:
        frame = frame.assign(run_id=run_id)
        return self._replace_rows("modality_preferences", run_id, frame,
                                  ["run_id", "user_id", "visual_weight", "text_weight",
                                   "n_items"])

    # ------------------------------------------------------------------ reads

    def latest_run(self, dataset: str, variant: str | None = None) -> dict | None:
        """The most recent run of a dataset (of one variant when given), as a dict."""
        self.ensure_schema()
        sql = "SELECT * FROM training_runs WHERE dataset = ?"
        params: list = [dataset]
        if variant is not None:
            sql += " AND variant = ?"
            params.append(variant)
        rows = self.warehouse.query(sql + " ORDER BY finished_at DESC, run_id DESC LIMIT 1",
                                    params).to_pylist()
        return rows[0] if rows else None

    def final_metrics(self, run_id: str) -> pd.DataFrame:
        self.ensure_schema()
        return self.warehouse.query(
            "SELECT split, metric, k, value FROM metrics WHERE run_id = ? AND epoch IS NULL "
            "AND slice = 'all' ORDER BY split, metric, k", [run_id]).to_pandas()

    def slice_metrics(self, run_id: str, split: str = "test", k: int = 20) -> pd.DataFrame:
        """One row per slice of a run: recall, ndcg, mrr @k and the slice's user count."""
        self.ensure_schema()
        return self.warehouse.query("""
            SELECT slice,
                   max(value) FILTER (WHERE metric = 'recall' AND k = ?) AS recall,
                   max(value) FILTER (WHERE metric = 'ndcg' AND k = ?) AS ndcg,
                   max(value) FILTER (WHERE metric = 'mrr' AND k = ?) AS mrr,
                   max(value) FILTER (WHERE metric = 'users') AS users
            FROM metrics WHERE run_id = ? AND split = ? AND epoch IS NULL
            GROUP BY slice ORDER BY slice = 'all' DESC, slice""",
            [k, k, k, run_id, split]).to_pandas()

    def curves(self, run_id: str) -> pd.DataFrame:
        self.ensure_schema()
        return self.warehouse.query(
            "SELECT split, metric, k, epoch, value FROM metrics "
            "WHERE run_id = ? AND epoch IS NOT NULL ORDER BY epoch", [run_id]).to_pandas()

    def latest_runs(self) -> pd.DataFrame:
        self.ensure_schema()
        return self.warehouse.query(
            "SELECT run_id, dataset, variant, device, seconds, seconds_per_epoch, best_epoch, "
            "finished_at FROM latest_runs ORDER BY dataset, variant").to_pandas()

    def modality_preferences(self, run_id: str) -> pd.DataFrame:
        self.ensure_schema()
        return self.warehouse.query(
            "SELECT user_id, visual_weight, text_weight, n_items FROM modality_preferences "
            "WHERE run_id = ? ORDER BY user_id", [run_id]).to_pandas()

    def rebuild_paper_tables(self) -> pd.DataFrame:
        """Recompute ``paper_tables`` from the latest run per dataset × variant (test, @20).

        Improv. = relative gain of the row over its reference row of the same table and
        dataset (Table 2: over the best baseline of each metric; Tables 3–4: over w/o t&v).
        """
        self.ensure_schema()
        with self.warehouse.transaction() as con:
            con.register("paper_layout", self._paper_layout(con))
            con.execute("DELETE FROM paper_tables")
            con.execute(f"""
                INSERT INTO paper_tables
                WITH final AS (
                    SELECT r.dataset, r.variant, r.run_id,
                           max(m.value) FILTER (WHERE m.metric = 'recall') AS recall,
                           max(m.value) FILTER (WHERE m.metric = 'mrr') AS mrr,
                           max(m.value) FILTER (WHERE m.metric = 'ndcg') AS ndcg
                    FROM latest_runs r JOIN metrics m USING (run_id)
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
            """)
        return self.paper_tables()

    @staticmethod
    def _paper_layout(con) -> pd.DataFrame:
        """PAPER_ROWS per dataset, "w/o t&v" resolved from the latest full run's settings: under
        the paper's propagation (graph = ckg) it is ``kgat``; under ours (graph = interactions)
        the model without modalities is exactly LightGCN, so it is ``lightgcn``."""
        graphs = dict(con.execute("""
            SELECT dataset, coalesce(json_extract_string(config_json, '$.graph'), 'ckg')
            FROM latest_runs WHERE variant = 'full'""").fetchall())
        datasets = [row[0] for row in con.execute(
            "SELECT DISTINCT dataset FROM latest_runs ORDER BY 1").fetchall()]
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
        self.ensure_schema()
        return self.warehouse.query(
            "SELECT * FROM paper_tables ORDER BY paper_table, dataset, row_order").to_pandas()

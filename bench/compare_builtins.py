"""Do the built-in datasets still produce the same tables? Two revisions, same offline inputs.

    python bench/compare_builtins.py --before 432113b [--datasets ml-100k ml-1m amazon-book]
        [--jobs ingest kg media]

For each revision (``--before`` in a temporary git worktree, and the working tree as "after")
and each dataset, the stage jobs run as ``make run JOB=<job> CONFIG=configs/offline.yaml`` runs
them, into a fresh data directory; then every table of the lake is compared: row count, columns, and
a content hash (SHA-256 of the rows sorted by every column, so neither row order nor Parquet
encoding counts). A column only one side has is listed, and the hash is also given over the
shared columns, so an added column does not hide a changed value.

Needs ``../shared/data`` (what configs/offline.yaml reads). Prints one markdown table.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]


def run_stages(checkout: Path, data_dir: Path, dataset: str, jobs: list[str]) -> None:
    """The stage jobs of ``checkout``, as ``make run`` runs them, with this venv's packages.

    ``PYTHONPATH`` puts the checkout's own packages first (the venv's editable install points at
    this repository); make is not used because its install step would re-point that install."""
    env = {**os.environ, "KG4REC_DATA_DIR": str(data_dir), "DAGSTER_HOME": str(data_dir / "home"),
           "PYTHONPATH": str(checkout)}
    env.pop("KG4REC_DATASETS", None)
    (data_dir / "home").mkdir(parents=True, exist_ok=True)
    (data_dir / "home" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    bin_dir = Path(sys.executable).parent
    for job in jobs:
        config = data_dir / f"run_config.{job}.yaml"
        with open(config, "w") as out:
            subprocess.run([sys.executable, "-m", "pipeline.run_config", "--job", job, "configs/offline.yaml"],
                           cwd=checkout, env=env, stdout=out, check=True)
        done = subprocess.run([str(bin_dir / "dagster"), "job", "execute", "-m", "pipeline", "-j", job,
                               "--tags", f'{{"dagster/partition": "{dataset}"}}', "-c", str(config)],
                              cwd=checkout, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{checkout.name} {dataset} {job} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")


def table_digest(path: Path, columns: list[str] | None = None) -> tuple[int, list[str], str]:
    table = pq.read_table(path)
    if columns is not None:
        table = table.select(columns)
    frame = table.to_pandas()
    names = sorted(frame.columns)
    text = frame[names].astype(str).sort_values(names).to_csv(index=False)
    return len(frame), names, hashlib.sha256(text.encode()).hexdigest()[:16]


def lake_tables(data_dir: Path, dataset: str) -> dict[str, Path]:
    folder = data_dir / "lake" / f"dataset={dataset}"
    return {p.stem: p for p in sorted(folder.glob("*.parquet"))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True, help="git revision to compare against")
    parser.add_argument("--datasets", nargs="+", default=["ml-100k", "ml-1m", "amazon-book"])
    parser.add_argument("--jobs", nargs="+", default=["ingest", "kg", "media"])
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="compare-builtins-") as tmp:
        tmp = Path(tmp)
        before = tmp / "before"
        subprocess.run(["git", "worktree", "add", "--detach", str(before), args.before],
                       cwd=REPO, check=True, capture_output=True)
        # configs/offline.yaml reads ../shared/data relative to the checkout
        (tmp / "shared").symlink_to((REPO.parent / "shared").resolve())
        try:
            print("| dataset | table | rows before | rows after | same content | note |")
            print("|---|---|---|---|---|---|")
            for dataset in args.datasets:
                dirs = {side: tmp / f"{side}-{dataset}" for side in ("before", "after")}
                run_stages(before, dirs["before"], dataset, args.jobs)
                run_stages(REPO, dirs["after"], dataset, args.jobs)
                old, new = (lake_tables(dirs[s], dataset) for s in ("before", "after"))
                for name in sorted(set(old) | set(new)):
                    print(compare_row(dataset, name, old.get(name), new.get(name)), flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(before)], cwd=REPO,
                           capture_output=True)
    return 0


def compare_row(dataset: str, name: str, old: Path | None, new: Path | None) -> str:
    if old is None or new is None:
        side = "after" if old is None else "before"
        return f"| {dataset} | {name} | {'–' if old is None else table_digest(old)[0]:} | " \
               f"{'–' if new is None else table_digest(new)[0]} | – | only {side} |"
    rows_old, cols_old, hash_old = table_digest(old)
    rows_new, cols_new, hash_new = table_digest(new)
    if cols_old == cols_new:
        note = "" if hash_old == hash_new else changed_columns(old, new)
        return f"| {dataset} | {name} | {rows_old:,} | {rows_new:,} | {'yes' if hash_old == hash_new else 'NO'} | {note} |"
    shared = sorted(set(cols_old) & set(cols_new))
    same = table_digest(old, shared)[2] == table_digest(new, shared)[2]
    added = sorted(set(cols_new) - set(cols_old))
    removed = sorted(set(cols_old) - set(cols_new))
    note = "; ".join(filter(None, [f"added {added}" if added else "", f"removed {removed}" if removed else ""]))
    return f"| {dataset} | {name} | {rows_old:,} | {rows_new:,} | {'yes' if same else 'NO'} (shared columns) | {note} |"


def changed_columns(old: Path, new: Path) -> str:
    """Which columns differ, for two tables of the same rows in the same order (else '')."""
    a, b = pq.read_table(old).to_pandas(), pq.read_table(new).to_pandas()
    if len(a) != len(b):
        return ""
    differ = [c for c in a.columns if not a[c].astype(str).equals(b[c].astype(str))]
    return f"changed: {', '.join(differ)}" if differ else "same values, other order"


if __name__ == "__main__":
    sys.exit(main())

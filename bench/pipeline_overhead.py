"""What the executor costs: wall time of the offline stages 1–5 against their steps' own time.

For each executor it runs ``dagster asset materialize -m pipeline --select 'not
group:training'`` for one dataset partition with ``configs/offline.yaml`` in a fresh data
directory and Dagster home (so every stage really runs), then reads the run's step statistics
from the Dagster instance. A step's own time is STEP_START → STEP_SUCCESS: it excludes the
process start and the code-location import that the executor pays before it. Printed per
executor: wall seconds, the sum of the steps' own seconds, their ratio (target ≤ 1.5), and the
slowest steps. Also the import time of the code location (target ≤ 2.5 s).

    python bench/pipeline_overhead.py --dataset ml-100k
    python bench/pipeline_overhead.py --executors in_process multiprocess
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]

#: run-config ``execution`` blocks; the first is what the jobs use by default
EXECUTORS = {
    "default": None,  # what the --config file says (configs/offline.yaml: in_process)
    "in_process": {"config": {"in_process": {}}},
    "multiprocess": {"config": {"multiprocess": {}}},  # spawn: each step imports the code again
    "forkserver": {"config": {"multiprocess": {"start_method": {
        "forkserver": {"preload_modules": ["pipeline.definitions"]}}}}},
}


def import_seconds(repeats: int = 3) -> float:
    """Median wall time of ``python -c "import pipeline.definitions"`` in a fresh process."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import pipeline.definitions"], cwd=ROOT, check=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def run_stages(dataset: str, execution: dict | None, config: Path, work: Path) -> dict:
    """Materialize stages 1–5 of ``dataset`` into ``work``; wall and per-step seconds."""
    run_config = yaml.safe_load(config.read_text())
    if execution is not None:
        run_config["execution"] = execution
    config_path = work / "run_config.yaml"
    config_path.write_text(yaml.safe_dump(run_config))
    home = work / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {**os.environ, "DAGSTER_HOME": str(home), "KG4REC_DATA_DIR": str(work / "data")}
    command = [str(Path(sys.executable).with_name("dagster")), "asset", "materialize", "-m",
               "pipeline", "--select", "not group:training", "--partition", dataset, "-c",
               str(config_path)]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    steps = step_seconds(home, env)
    return {"wall": wall, "steps": steps, "step_sum": sum(steps.values())}


def step_seconds(home: Path, env: dict) -> dict[str, float]:
    """STEP_START → end of each step of the latest run (read in a child: DAGSTER_HOME)."""
    code = (
        "import json, dagster as dg\n"
        "instance = dg.DagsterInstance.get()\n"
        "run = instance.get_runs(limit=1)[0]\n"
        "stats = instance.get_run_step_stats(run.run_id)\n"
        "print(json.dumps({s.step_key: s.end_time - s.start_time for s in stats"
        " if s.start_time and s.end_time}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--config", default=str(ROOT / "configs" / "offline.yaml"))
    parser.add_argument("--executors", nargs="+", default=list(EXECUTORS), choices=list(EXECUTORS))
    args = parser.parse_args(argv)

    print(f"import pipeline.definitions: {import_seconds():.2f} s (median of 3; target <= 2.5)")
    print(f"\nstages 1-5 of {args.dataset} (fresh lake each), step time = STEP_START -> end")
    print("| executor | wall s | sum of step s | wall / steps | steps | slowest steps |")
    print("|---|---|---|---|---|---|")
    for name in args.executors:
        with tempfile.TemporaryDirectory(prefix=f"overhead-{name}-") as work:
            result = run_stages(args.dataset, EXECUTORS[name], Path(args.config), Path(work))
        slowest = sorted(result["steps"].items(), key=lambda kv: -kv[1])[:3]
        print(f"| {name} | {result['wall']:.1f} | {result['step_sum']:.1f} | "
              f"{result['wall'] / max(result['step_sum'], 1e-9):.2f} | {len(result['steps'])} | "
              + ", ".join(f"{k} {v:.1f}" for k, v in slowest) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

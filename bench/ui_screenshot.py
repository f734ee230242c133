"""Browser check: headless Chromium opens the Dagster UI's asset graph and saves a screenshot.

    python bench/ui_screenshot.py [--url http://127.0.0.1:3000] [--out bench/out/asset_graph.png]

Without ``--url`` it starts ``dagster dev -m pipeline`` on a free loopback port (temporary
DAGSTER_HOME) and stops it afterwards. It then asks Chromium (Debian's ``chromium`` package:
``apt-get install chromium``) for the rendered DOM of the global asset graph and checks that
every stage group is shown, and saves a screenshot. Exit status 0 = every group visible.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars", "--window-size=1800,1100", "--virtual-time-budget=20000",
]


def stage_groups() -> list[str]:
    from pipeline.definitions import defs

    groups = {spec.group_name for spec in defs.resolve_all_asset_specs()}
    return sorted(g for g in groups if g)


def start_dagster_dev(home: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster"), "dev", "-m", "pipeline", "-h", "127.0.0.1", "-p", str(port)],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{base}/server_info", timeout=2).ok:
                return proc, base
        except requests.ConnectionError:
            time.sleep(1)
    proc.send_signal(signal.SIGINT)
    raise SystemExit("dagster dev did not start within 120 s")


def chromium(*args: str, user_data: Path) -> subprocess.CompletedProcess:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        raise SystemExit("chromium not found: apt-get install chromium")
    return subprocess.run([binary, *CHROMIUM_FLAGS, f"--user-data-dir={user_data}", *args],
                          capture_output=True, text=True, timeout=180)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running Dagster UI (default: start one)")
    parser.add_argument("--out", default=str(REPO / "bench" / "out" / "asset_graph.png"))
    args = parser.parse_args()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    groups = stage_groups()
    with tempfile.TemporaryDirectory() as tmp:
        proc, base = (None, args.url.rstrip("/")) if args.url else start_dagster_dev(Path(tmp))
        try:
            # The UI greets a new instance with a community dialog over the graph; mark it seen
            # through the same GraphQL mutation its "Skip" button sends.
            requests.post(f"{base}/graphql", json={"query": "mutation SetNuxSeen { setNuxSeen }"}, timeout=30)
            page = f"{base}/asset-groups"
            dom = chromium("--dump-dom", page, user_data=Path(tmp) / "profile-dom").stdout
            chromium(f"--screenshot={out}", page, user_data=Path(tmp) / "profile-shot")
        finally:
            if proc is not None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGTERM)
    missing = [g for g in groups if g not in dom]
    print(f"asset graph: {page}\nscreenshot: {out} ({out.stat().st_size if out.exists() else 0:,} bytes)")
    print(f"stage groups expected: {groups}; missing from the rendered page: {missing or 'none'}")
    return 1 if missing or not out.exists() else 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Data-parallel training (model/distributed.py) under ``torchrun -m model.job``, gloo on the CPU.

The torchrun runs train ``kgat`` with its joint TransR loss: BPR and KG batches are both
sharded, its message dropout (0.1) stays on — every rank draws the same masks as one process
(same seed, same full forward) — and its float arithmetic is well-conditioned, so a two-rank
run ends within 1e-5 of one process. The fusion variants are not compared that way: in float32
Adam turns rounding noise in gradients that are mathematically zero (e.g. the attention's key
bias) into full-size steps, so even one process with 1 vs 2 threads ends 1e-2 apart; their
loss decomposition (shares weighted by size, the alignment on the whole batch) is checked
in-process by the gradient test below instead.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from model.checkpoints import load_checkpoint
from model.config import TrainSettings
from model.data import build_data, read_lake_tables
from model.distributed import StepLoss, shard_bounds, share
from model.recommenders import build_model
from model.synthetic_data import synthetic_tables
from model.train import train
from warehouse import Lake, Warehouse
from warehouse.runs import RunStore

REPO = Path(__file__).resolve().parents[1]
DATASET = "tiny"
# 4 global batches per epoch (the last one of 57 rows, split 29/28), 4 KG slices beside them
SETTINGS = {"variant": "kgat", "kg_loss": "joint", "epochs": 3, "batch_size": 101,
            "embed_dim": 16, "relation_dim": 8, "layer_sizes": [16, 8], "device": "cpu"}
TOLERANCE = 1e-5
HUNG_TIMEOUT_S = 8


def quiet(_line: str) -> None:
    pass


@pytest.fixture(scope="module")
def lake(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ddp-lake")
    lake = Lake(root)
    for name, table in synthetic_tables(n_users=30, n_items=40, n_pairs=450, n_attributes=8,
                                        n_triples=60, sequence_length=6, seed=2).items():
        lake.write(DATASET, name, table)
    return root


@pytest.fixture(scope="module")
def data(lake):
    return build_data(read_lake_tables(lake, DATASET))


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """One process over the same global batches (one thread, as the torchrun workers)."""
    out = tmp_path_factory.mktemp("ddp-one")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = train(TrainSettings(**SETTINGS), data, out, log=quiet)
    finally:
        torch.set_num_threads(threads)
    return result, out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun(lake: Path, out_dir: Path, nproc: int = 2, timeout_s: float = 60,
             stall: dict | None = None) -> subprocess.Popen:
    config = {"dataset": DATASET, "data_dir": str(lake), "lake_version": None,
              "settings": SETTINGS, "resume": True, "out_dir": str(out_dir),
              "timeout_s": timeout_s}
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir.parent / f"{out_dir.name}.json"
    path.write_text(json.dumps(config))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    env.pop("KG4REC_TEST_STALL", None)
    if stall is not None:
        env["KG4REC_TEST_STALL"] = json.dumps(stall)
    return subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
         "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
         "-m", "model.job", "--config", str(path)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)


def finish(proc: subprocess.Popen, timeout: float) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail(f"torchrun still running after {timeout} s:\n{out[-4000:]}")
    return out


def wait_for(path: Path, proc: subprocess.Popen, timeout: float) -> int:
    """The pid the stalled rank wrote."""
    deadline = time.monotonic() + timeout
    while not path.is_file():
        if proc.poll() is not None:
            pytest.fail(f"torchrun ended before the stall:\n{proc.communicate()[0][-4000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no {path} after {timeout} s")
        time.sleep(0.05)
    return int(path.read_text())


def assert_same_run(out_dir: Path, reference_dir: Path, result: dict, expected) -> None:
    """Parameters and Adam state within float tolerance, the same metrics and history."""
    mine, _ = load_checkpoint(out_dir / "last.safetensors")
    theirs, _ = load_checkpoint(reference_dir / "last.safetensors")
    assert set(mine) == set(theirs)
    for key in theirs:
        if key.startswith(("model.", "optim.")):
            assert torch.allclose(mine[key].double(), theirs[key].double(), atol=TOLERANCE,
                                  rtol=0), key
    assert result["best_epoch"] == expected.best_epoch
    for split in ("valid", "test"):
        for name, metrics in expected.slices[split].items():
            assert result["slices"][split][name] == pytest.approx(metrics, abs=1e-9), name
    for got, want in zip(result["history"], expected.history, strict=True):
        for key in ("bpr", "reg", "kg", "align", "loss", "valid/recall@20"):
            assert got[key] == pytest.approx(want[key], rel=1e-5, abs=1e-8), key


def test_shards_cover_the_global_batch_in_order():
    for n, world in ((101, 2), (57, 2), (2, 3), (7, 4)):
        bounds = [shard_bounds(n, r, world) for r in range(world)]
        assert bounds[0][0] == 0 and bounds[-1][1] == n
        assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))  # contiguous, in order
        rows = torch.arange(n)
        weights = [share((rows,), r, world)[1] for r in range(world)]
        assert sum(weights) == pytest.approx(world)  # the weighted means average to the mean
    (rows,), weight = share((torch.arange(2),), 2, 3)  # a rank without rows: weight 0
    assert weight == 0.0 and rows.numel() == 1


@pytest.mark.usefixtures("one_torch_thread")
def test_rank_shares_give_the_one_process_gradient_of_a_fusion_variant(data):
    """The loss each rank back-propagates (its BPR/KG share weighted by size, the alignment
    over the whole batch), averaged over ranks as DDP does, has the one-process gradient."""
    settings = TrainSettings(variant="full", kg_loss="joint", embed_dim=16, relation_dim=8,
                             layer_sizes=(16, 8), n_heads=2, n_blocks=1, ffn_dim=16)
    torch.manual_seed(0)
    model = build_model(settings.model_config(), data)
    model.train()
    gen = torch.Generator().manual_seed(1)
    users = data.train_user[:101]
    pos = data.train_item[:101]
    neg = torch.randint(data.n_items, (101,), generator=gen)
    kg = (data.kg_head[:37], data.kg_relation[:37] + 2, data.kg_tail[:37],
          torch.randint(data.n_entities, (37,), generator=gen))

    def gradients(loss: torch.Tensor) -> dict[str, torch.Tensor]:
        model.zero_grad(set_to_none=True)
        loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    torch.manual_seed(3)  # the same dropout draws in every forward
    bpr, reg = model.bpr_loss(users, pos, neg)
    align = model.align_loss(users, pos, neg)
    assert align > 0
    one = gradients(bpr + settings.reg * reg + settings.align_weight * align
                    + model.kg_loss(*kg, settings.kg_l2))
    step = StepLoss(model, settings.reg, settings.align_weight, settings.kg_l2, world_size=2)
    ranks = []
    for rank in range(2):
        torch.manual_seed(3)
        batch, weight = share((users, pos, neg), rank, 2)
        kg_share, kg_weight = share(kg, rank, 2)
        loss, _ = step(batch, weight, (users, pos, neg), kg_share, kg_weight)
        ranks.append(gradients(loss))
    assert set(ranks[0]) == set(one)
    for name, grad in one.items():
        mean = (ranks[0][name] + ranks[1][name]) / 2
        assert torch.allclose(mean, grad, rtol=1e-4, atol=1e-7), name


@pytest.fixture(scope="module")
def launches(lake, tmp_path_factory):
    """The three torchrun runs, started together (most of each is process start-up)."""
    root = tmp_path_factory.mktemp("ddp-runs")
    stall = {"rank": 1, "epoch": 1}
    runs = {
        # the production entry point (what Pipes launches), under torchrun
        "two": torchrun(lake, root / "two"),
        "killed": torchrun(lake, root / "killed",
                           stall=stall | {"pid_file": str(root / "killed.pid")}),
        # 8 s: well above the lag between ranks of a loaded CPU (start-up included)
        "hung": torchrun(lake, root / "hung", timeout_s=HUNG_TIMEOUT_S,
                         stall=stall | {"pid_file": str(root / "hung.pid")}),
    }
    yield root, runs
    for proc in runs.values():  # a failed test leaves nothing running
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_two_ranks_train_like_one_process(launches, reference, lake):
    expected, reference_dir = reference
    root, runs = launches
    out_dir = root / "two"
    proc = runs["two"]
    out = finish(proc, timeout=180)
    assert proc.returncode == 0, out[-4000:]
    assert "[rank 1]" not in out  # rank 0 alone logs
    result = json.loads((out_dir / "config.json").read_text())["result"]
    assert_same_run(out_dir, reference_dir, result, expected)
    _, meta = load_checkpoint(out_dir / "last.safetensors")
    assert meta["world_size"] == 2
    # model.job under torchrun: rank 0 alone records the run (one row) and writes result.json
    runs = RunStore(Warehouse(lake / "warehouse.duckdb", Lake(lake))).latest_runs()
    assert len(runs) == 1 and (out_dir / "result.json").is_file()


def test_a_killed_rank_fails_the_run_which_resumes_on_one_process(launches, data, reference):
    """Rank 1 stops after epoch 1's checkpoint and is SIGKILLed: torchrun stops rank 0 and
    fails naming rank 1, within seconds. The checkpoint of two ranks then resumes in one
    process and ends where the one-process run ends."""
    expected, reference_dir = reference
    root, runs = launches
    out_dir, proc = root / "killed", runs["killed"]
    pid = wait_for(root / "killed.pid", proc, timeout=180)
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    out = finish(proc, timeout=60)
    assert proc.returncode != 0
    assert time.monotonic() - killed < 30
    assert "Signal 9 (SIGKILL)" in out and "local_rank: 1" in out, out[-4000:]

    _, meta = load_checkpoint(out_dir / "last.safetensors")
    assert meta["world_size"] == 2 and meta["state"]["epoch"] == 1
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        resumed = train(TrainSettings(**SETTINGS), data, out_dir, log=quiet)
    finally:
        torch.set_num_threads(threads)
    assert resumed.resumed_from_epoch == 1
    assert_same_run(out_dir, reference_dir, resumed.to_dict(), expected)


def test_a_hung_rank_fails_the_run_at_the_process_group_timeout(launches):
    """Rank 1 stops responding (alive): rank 0's next collective fails at the timeout with
    a message saying what happened, and torchrun ends the run (stopping rank 1)."""
    root, runs = launches
    proc = runs["hung"]
    wait_for(root / "hung.pid", proc, timeout=180)
    out = finish(proc, timeout=60)
    assert proc.returncode != 0
    assert "DistributedFailure: rank 0 of 2: a collective operation timed out" in out, out[-4000:]
    assert f"process-group timeout {HUNG_TIMEOUT_S} s" in out and "resumes with any world size" in out
    assert "exitcode  : -15" in out  # the hung rank 1, stopped by torchrun (SIGTERM)

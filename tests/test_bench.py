"""bench/train_speed.py: its FLOP count of the fusion is torch's count of the same forward, and
its profile sorts the ops into categories."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import model.fusion as model_fusion
from model.config import TrainSettings
from model.data import build_data
from model.recommenders import build_model
from model.synthetic_data import synthetic_tables
from tests.support.bench import load_bench

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _train_speed():
    return load_bench("train_speed")


def _attention_kernels():
    return load_bench("attention_kernels")


def _matmul_attention(q, k, v, mask, dropout):
    """The attention as two plain matmuls, which torch's FLOP counter sees (CPU SDPA it does
    not)."""
    return _attention_kernels().math_attention(q, k, v, mask)


@pytest.mark.parametrize("variant", ["full", "t2v"])
def test_fusion_flops_match_torchs_flop_counter(variant, monkeypatch):
    data = build_data(synthetic_tables(n_users=30, n_items=40, n_pairs=400, n_attributes=10,
                                       n_triples=60, sequence_length=8, seed=3))
    settings = TrainSettings(variant=variant, embed_dim=16, n_heads=2, ffn_dim=32)
    torch.manual_seed(0)
    model = build_model(settings.model_config(), data)
    contents = {m: model.content(m).detach() for m in model.modalities}
    monkeypatch.setattr(model_fusion, "attention", _matmul_attention)
    with FlopCounterMode(display=False) as counter:
        model.fuse(contents)
    flops = _train_speed().fusion_flops(model, settings)
    assert flops["total"] == counter.get_total_flops()
    assert flops["attention"] > 0.1 * flops["total"]


def test_the_profile_sorts_ops_into_categories_and_shares_add_up():
    bench = _train_speed()
    assert bench.op_category("aten::addmm") == "matmul"
    assert bench.op_category("aten::_scaled_dot_product_flash_attention_for_cpu_backward") == "attention"
    assert bench.op_category("aten::cat") == "data movement"
    assert bench.op_category("aten::index") == "data movement"
    assert bench.op_category("aten::index_add") == "other"  # a prefix counts for attention only
    x = torch.randn(192, 192, requires_grad=True)

    def step():
        torch.cat([x @ x, x.relu()]).sum().backward()

    shares = bench.profile_categories(step)
    assert sum(shares.values()) == pytest.approx(1.0)
    assert shares["matmul"] > 0 and shares["data movement"] > 0 and shares["other"] > 0
    assert shares["attention"] == 0


@pytest.mark.parametrize("queries", [6, 1])
def test_attention_kernels_agree_and_count_their_flops(queries):
    bench = _attention_kernels()
    q, k, v, mask = bench.inputs(items=5, heads=2, queries=queries, length=6, head_dim=4,
                                 valid=0.5, dtype=torch.float32)
    assert mask.any(-1).all() and not mask.all()  # masked keys, never a fully masked row
    outputs, grads = [], []
    for kernel in (bench.sdpa, bench.math_attention):
        with FlopCounterMode(display=False) as counter:
            out = kernel(q, k, v, mask)
            (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        outputs.append(out.detach())
        grads.append([t.grad.clone() for t in (q, k, v)])
        for t in (q, k, v):
            t.grad = None
    torch.testing.assert_close(outputs[0], outputs[1])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b)
    # the bench's GFLOP (3 × the forward's two matmuls) is what the counter saw for math
    assert counter.get_total_flops() == 3 * 4 * 5 * 2 * queries * 6 * 4


def test_attention_kernels_bench_prints_every_kernel(capsys):
    assert _attention_kernels().main(["--items", "4", "--heads", "2", "--length", "5",
                                      "--head-dim", "4", "--repeats", "1", "--no-compile"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    kernels = [row.split(" | ")[1:3] for row in rows[1:]]
    assert kernels == [["sdpa", "float32"], ["math", "float32"], ["math", "bfloat16"]] * 2
    assert rows[1].endswith("| 1.00 |")  # the baseline against itself


def test_gpu_train_script_runs_its_dry_run(tmp_path):
    """bench/gpu_train.sh is run by hand on a lent GPU machine: its TINY dry run keeps it from
    rotting between loans (it once imported a function that had moved)."""
    script = Path(__file__).resolve().parents[1] / "bench" / "gpu_train.sh"
    # full's choice in a tuning ledger of our own: the script trains with it
    chosen = {"study": "full", "variant": "full", "config_hash": "h", "chosen": True,
              "fixed": {"seq_len": 4, "patience": 3}, "params": {"lr": 0.002}}
    (tmp_path / "ml-1m.jsonl").write_text(json.dumps(chosen) + "\n")
    env = {**os.environ, "TINY": "1", "VARIANTS": "lightgcn full", "PYTHON": sys.executable,
           "OUT": str(tmp_path), "OMP_NUM_THREADS": "1", "TUNING_LEDGERS": str(tmp_path)}
    done = subprocess.run(["bash", str(script), str(tmp_path / "no-lake")], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((tmp_path / "gpu_train.json").read_text())["results"]
    assert list(results) == ["lightgcn", "full"]
    assert "lightgcn: defaults, batch 256" in done.stdout
    assert "full: tuned on validation: {'seq_len': 4, 'patience': 3, 'lr': 0.002}" in done.stdout
    for variant, result in results.items():
        assert result["epochs_run"] == 2 and result["device"] == "cpu"
        assert 0 < result["test"]["recall@20"] <= 1
        assert f"| {variant} | cpu | 2 |" in done.stdout

"""bench/tune.py: validation chooses among the trials, the test split is read once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import model.evaluate
import model.train
from model.config import TrainSettings
from model.data import build_data
from model.synthetic_data import synthetic_tables
from tests.support.bench import load_bench
from warehouse import Lake, Warehouse
from warehouse.runs import RunStore

DATASET = "ml-100k"
TINY = {"epochs": 2, "batch_size": 256, "embed_dim": 16, "relation_dim": 8,
        "layer_sizes": [16, 8], "device": "cpu"}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _tune():
    return load_bench("tune")


def _tiny_settings() -> list[str]:
    """``--set KEY=VALUE`` arguments for :data:`TINY`, as a command line gives them."""
    return [arg for key, value in TINY.items()
            for arg in ("--set", f"{key}={json.dumps(value).replace(' ', '')}")]


def _bprmf_search(tmp_path: Path, grid: str) -> tuple[Path, list[str]]:
    """The ledger and the command line of a tiny BPR-MF search over ``grid`` (no warehouse)."""
    ledger = tmp_path / f"{DATASET}.jsonl"
    return ledger, ["--dataset", DATASET, "--variant", "bprmf", "--data-dir", str(tmp_path),
                    "--ledger", str(ledger), "--grid", grid, "--no-warehouse", *_tiny_settings()]


def _synthetic_lake(tmp_path: Path) -> Lake:
    """A small synthetic dataset in the lake layout, as the searches below read it."""
    lake = Lake(tmp_path)
    for name, table in synthetic_tables(n_users=30, n_items=120, n_pairs=900, n_attributes=5,
                                        n_triples=30, sequence_length=5, seed=4).items():
        lake.write(DATASET, name, table)
    return lake


def _ranked_splits(monkeypatch) -> list[str]:
    """The split of every ranking pass from now on (evaluate and evaluate_slices share it)."""
    splits = []
    real_ranked_chunks = model.evaluate._ranked_chunks

    def counting_ranked_chunks(model_, data, split, *args):
        splits.append(split)
        return real_ranked_chunks(model_, data, split, *args)

    monkeypatch.setattr(model.evaluate, "_ranked_chunks", counting_ranked_chunks)
    return splits


def test_candidates_are_the_grid_or_a_seeded_subset():
    tune = _tune()
    grid = tune.parse_grid(["lr=1e-3,5e-3,1e-2", "batch_size=1024,2048"])
    assert grid == {"lr": [1e-3, 5e-3, 1e-2], "batch_size": [1024, 2048]}
    assert len(tune.candidates(grid, 8, seed=0)) == 6
    subset = tune.candidates(grid, 4, seed=0)
    assert len(subset) == 4 and len({json.dumps(c, sort_keys=True) for c in subset}) == 4
    assert subset == tune.candidates(grid, 4, seed=0) != tune.candidates(grid, 4, seed=1)
    with pytest.raises(ValueError, match="not a training setting"):
        tune.parse_grid(["learning_rate=1"])


def test_ledger_names_the_bad_line(tmp_path):
    ledger = tmp_path / "t.jsonl"
    ledger.write_text('{"config_hash": "a"}\nnot json\n')
    with pytest.raises(ValueError, match=r"t.jsonl:2"):
        _tune().read_ledger(ledger)


def test_search_reads_test_once_for_the_validation_winner(tmp_path, monkeypatch, capsys):
    lake = _synthetic_lake(tmp_path)
    splits = _ranked_splits(monkeypatch)
    ledger = tmp_path / f"{DATASET}.jsonl"
    args = ["--dataset", DATASET, "--variant", "lightgcn", "--data-dir", str(tmp_path),
            "--ledger", str(ledger), "--grid", "lr=0.0001,0.05", "--budget", "2"]
    args += _tiny_settings()
    assert _tune().main(args) == 0
    assert splits.count("test") == 1  # two trials, one test evaluation

    records = [json.loads(line) for line in ledger.read_text().splitlines()]
    trials, final = records[:2], records[2]
    scores = [t["valid"]["recall@20"] for t in trials]
    assert len(set(scores)) == 2 and max(scores) < 1  # a real choice
    best = max(trials, key=lambda t: t["valid"]["recall@20"])
    assert final["chosen"] and final["config_hash"] == best["config_hash"]
    assert "test" in final and all("test" not in t for t in trials)

    store = RunStore(Warehouse(tmp_path / "warehouse.duckdb", lake))
    rows = store.warehouse.query(
        "SELECT config_hash, chosen, valid_recall FROM tuning_trials ORDER BY trial").to_pylist()
    assert [r["chosen"] for r in rows].count(True) == 1
    assert next(r for r in rows if r["chosen"])["config_hash"] == best["config_hash"]
    sources = store.warehouse.query(
        "SELECT source, count(*) AS n FROM training_runs GROUP BY 1 ORDER BY 1").to_pylist()
    assert sources == [{"source": "tune", "n": 2}, {"source": "tuned", "n": 1}]
    latest = store.latest_runs()
    assert len(latest) == 1  # the search trials are not "runs with a result"

    # a second call trains nothing and does not read the test split again
    splits.clear()
    assert _tune().main(args) == 0
    out = capsys.readouterr().out
    assert f"already in {DATASET}.jsonl" in out and "test already read" in out
    assert splits == []

    table = _tune().report(ledger)
    assert f"| lightgcn | lightgcn | 2 | {final['params']} |" in table
    rows = [line for line in _tune().trials_report(ledger).splitlines()
            if line.startswith("| lightgcn |")]
    assert [row.split(" | ")[1] for row in rows] == ["1", "2"]  # every trial, in order
    for row, trial in zip(rows, trials, strict=True):
        assert f" | {trial['params']} | {trial['valid']['recall@20']:.4f} | " in row
        assert f" | {trial['settings']['precision']} | " in row
        assert row.endswith("| **chosen** |") == (trial["config_hash"] == best["config_hash"])

    # the test read keeps its slices; a ledger written without them gets them back from the
    # warehouse run of the same hash, and only when that run's overall number is the ledger's
    assert set(final["test_slices"]) == set(model.evaluate.SLICES)
    assert final["test_slices"]["all"]["recall@20"] == final["test"]["recall@20"]
    stripped = {k: v for k, v in final.items() if k != "test_slices"}
    ledger.write_text("".join(json.dumps(r) + "\n" for r in [*trials, stripped]))
    assert _tune().backfill_slices(ledger, store, DATASET) == 1
    amended = _tune().read_ledger(ledger)[final["config_hash"]]
    assert amended["test_slices"].keys() == final["test_slices"].keys()
    for name, values in final["test_slices"].items():
        assert amended["test_slices"][name] == pytest.approx(values)
    assert amended["slices_from"].startswith(f"{DATASET}-lightgcn-")
    assert _tune().backfill_slices(ledger, store, DATASET) == 0  # nothing left to fill
    other = {**stripped, "test": {**stripped["test"], "recall@20": 0.123456}}
    ledger.write_text("".join(json.dumps(r) + "\n" for r in [*trials, other]))
    assert _tune().backfill_slices(ledger, store, DATASET) == 0  # not the same run

    # bench/variants.py trains with what the search chose
    assert _tune().tuned_settings(DATASET, "lightgcn", tmp_path) == {
        **final["fixed"], **final["params"]}
    assert _tune().tuned_settings(DATASET, "kgat", tmp_path) == {}
    # another study of the same variant (a preset, say) chosen later is not the variant's choice
    other_study = {**final, "study": "paper", "config_hash": "paper-hash",
                   "fixed": {**final["fixed"], "preset": "paper"}, "params": {"lr": 0.5},
                   "tested_at": "9999-01-01T00:00:00Z"}
    _tune().append_ledger(ledger, other_study)
    assert _tune().tuned_settings(DATASET, "lightgcn", tmp_path) == {
        **final["fixed"], **final["params"]}
    assert _tune().tuned_settings(DATASET, "lightgcn", tmp_path, study="paper")["lr"] == 0.5
    # a study of the variant's own model under another name (e.g. "bprmf-predefined") counts
    renamed = {**final, "study": "lightgcn-predefined", "config_hash": "renamed-hash",
               "params": {"lr": 0.25}, "tested_at": "9999-01-02T00:00:00Z"}
    _tune().append_ledger(ledger, renamed)
    assert _tune().tuned_settings(DATASET, "lightgcn", tmp_path)["lr"] == 0.25


def test_a_lost_checkpoint_is_replayed_and_seeds_replicate_the_chosen_configuration(
        tmp_path, capsys):
    import shutil

    _synthetic_lake(tmp_path)
    ledger, args = _bprmf_search(tmp_path, "lr=0.01")
    tune = _tune()
    assert tune.main([*args, "--no-test"]) == 0
    (trial,) = [json.loads(line) for line in ledger.read_text().splitlines()]
    shutil.rmtree(tmp_path / "models")  # a new machine: the ledger survives, checkpoints do not

    assert tune.main([*args, "--replicate-seeds", "1,2"]) == 0
    out = capsys.readouterr().out
    assert "replaying it" in out
    records = [json.loads(line) for line in ledger.read_text().splitlines()]
    chosen, seeds = records[1], records[2:]
    assert chosen["chosen"] and chosen["replay"]["valid"] == trial["valid"]  # same training
    assert [r["seed"] for r in seeds] == [1, 2] and all(r["replicate"] for r in seeds)
    assert all(r["chosen_hash"] == trial["config_hash"] and "test" in r for r in seeds)
    assert len({r["test"]["recall@20"] for r in [chosen, *seeds]}) > 1  # seeds differ
    row = next(line for line in tune.report(ledger).splitlines() if line.startswith("| bprmf"))
    assert "| 1 |" in row and "(n=3)" in row  # one configuration searched, three seeds
    # the slices table: the mean of the three seeds' slices
    (slice_row,) = [line for line in tune.slices_report(ledger).splitlines()
                    if line.startswith("| bprmf")]
    cells = [c.strip() for c in slice_row.strip("|").split("|")]
    assert cells[1] == "3"
    for name, cell in zip(model.evaluate.SLICES, cells[2:], strict=True):
        recall = [r["test_slices"][name]["recall@20"] for r in [chosen, *seeds]]
        assert cell.startswith(f"{sum(recall) / 3:.4f} (")
    # the replicates are not trials of the search: a rerun finds all and trains nothing
    assert tune.main([*args, "--replicate-seeds", "1,2"]) == 0
    out = capsys.readouterr().out
    assert "test already read" in out and out.count("already in") == 3
    assert len(ledger.read_text().splitlines()) == len(records)


def test_a_time_capped_trial_replays_its_epochs_not_its_seconds():
    tune = _tune()
    from model.config import TrainSettings

    settings = TrainSettings(variant="lightgcn", max_seconds=60.0, epochs=200).to_dict()
    capped = {"settings": settings, "stopped": "time", "epochs_run": 17}
    replay = tune.replay_settings(capped, seed=3)
    assert (replay.epochs, replay.max_seconds, replay.seed) == (17, None, 3)
    early = tune.replay_settings({"settings": settings, "stopped": "patience", "epochs_run": 17})
    assert (early.epochs, early.max_seconds) == (200, 60.0)


def test_cold_start_bench_holds_out_whole_items(tmp_path, capsys):
    cold_start = load_bench("cold_start")
    lake = Lake(tmp_path)
    for name, table in synthetic_tables(n_users=40, n_items=150, n_pairs=1500, n_attributes=5,
                                        n_triples=40, modalities=("text",), sequence_length=5,
                                        seed=4).items():
        lake.write(DATASET, name, table)
    split = cold_start.cold_split_table(lake.read(DATASET, "split"), 0.2, seed=1)
    frame = split.to_pandas()
    held = set(frame.loc[frame["split"] != "train", "item_id"])
    assert held and not held & set(frame.loc[frame["split"] == "train", "item_id"])
    ledger = tmp_path / "cold.jsonl"
    tuning = tmp_path / "tuning"
    tuning.mkdir()  # the warm search chose lr 0.02 for lightgcn; --set wins over it
    (tuning / f"{DATASET}.jsonl").write_text(json.dumps({
        "config_hash": "h", "study": "lightgcn", "variant": "lightgcn", "chosen": True,
        "params": {"lr": 0.02, "batch_size": 4096}, "fixed": {}}) + "\n")
    args = ["--dataset", DATASET, "--data-dir", str(tmp_path), "--fraction", "0.2",
            "--variants", "content", "lightgcn", "--seeds", "1,2", "--ledger", str(ledger),
            "--tuning-ledgers", str(tuning)]
    args += _tiny_settings()
    assert cold_start.main(args) == 0
    out = capsys.readouterr().out
    records = [json.loads(line) for line in ledger.read_text().splitlines()]
    assert [(r["variant"], r["seed"]) for r in records] == [
        ("content", 1), ("lightgcn", 1), ("content", 2), ("lightgcn", 2)]
    trained = records[1]["settings"]
    assert trained["lr"] == 0.02 and trained["batch_size"] == TINY["batch_size"]
    assert trained["negative_items"] == "train"
    assert records[0]["n_cold"] != records[2]["n_cold"] or \
        records[0]["test"] != records[2]["test"]  # another seed, other cold items
    for record in records:  # cold items ranked alone do at least as well: all held-out are cold
        assert record["test"]["recall@20"] >= record["test_all_items"]["recall@20"] - 1e-9
        assert record["test"]["users"] == record["test_all_items"]["users"]
    row = next(line for line in out.splitlines() if line.startswith("| lightgcn |"))
    test = [r["test"]["recall@20"] for r in records if r["variant"] == "lightgcn"]
    assert "| [1, 2] |" in row and f"{sum(test) / 2:.4f} ± " in row
    store = RunStore(Warehouse(tmp_path / "warehouse.duckdb", lake))
    runs = store.warehouse.query("SELECT dataset, source FROM training_runs").to_pylist()
    assert runs == [{"dataset": f"{DATASET}/cold_items", "source": "cold"}] * 2
    # a rerun trains nothing: every run is in the ledger
    assert cold_start.main(args) == 0
    assert capsys.readouterr().out.count("already in cold.jsonl") == 4
    assert len(ledger.read_text().splitlines()) == 4


def test_a_trial_recorded_before_a_new_setting_existed_is_still_found():
    from model.config import TrainSettings

    tune = _tune()
    settings = TrainSettings(variant="lightgcn", lr=0.01)
    old = {k: v for k, v in settings.to_dict().items() if k not in ("cold_items",
                                                                    "negative_items")}
    done = {"oldhash": {"settings": old, "variant": "lightgcn", "valid": {"recall@20": 0.2}}}
    assert tune.find_trial(done, settings) is done["oldhash"]
    # a new setting at a non-default value is another configuration
    assert tune.find_trial(done, TrainSettings(variant="lightgcn", lr=0.01,
                                               negative_items="train")) is None
    assert tune.find_trial(done, TrainSettings(variant="lightgcn", lr=0.005)) is None


def test_a_trial_run_in_bf16_elsewhere_is_found_and_replayed_in_this_machines_precision(
        tmp_path):
    """Machines change between sessions (one with AVX-512 BF16, the next without): a search
    continued with ``--set precision=fp32`` finds the bf16 trials, and a replay of one runs in
    fp32 (seeds and refits take the same ``Search._execution``); the model settings stay the
    recorded ones."""
    tune = _tune()
    recorded = TrainSettings(variant="full", lr=0.005, precision="bf16", seq_len=16)
    done = {recorded.config_hash(): {"settings": recorded.to_dict(), "variant": "full",
                                     "config_hash": recorded.config_hash(), "stopped": "patience",
                                     "valid": {"recall@20": 0.3}}}
    here = TrainSettings(variant="full", lr=0.005, precision="fp32", seq_len=16)
    assert here.config_hash() != recorded.config_hash()
    assert tune.find_trial(done, here) is done[recorded.config_hash()]
    # a setting of the model itself still tells configurations apart
    assert tune.find_trial(done, TrainSettings(variant="full", lr=0.005, precision="fp32",
                                               seq_len=32)) is None

    search = tune.Search(dataset="ml-100k", variant="full", study="full", grid={"lr": [0.005]},
                         fixed={"precision": "fp32", "seq_len": 16}, budget=1, seed=0,
                         threads=1, ledger=tmp_path / "l.jsonl", data=None, store=None,
                         out_root=tmp_path)
    replay, out_dir = search._replay(done[recorded.config_hash()], evaluate_test=True)
    assert (replay.precision, replay.lr, replay.seq_len) == ("fp32", 0.005, 16)
    assert out_dir == tmp_path / replay.config_hash()
    # without a precision of its own, the search replays what the trial recorded
    search.fixed = {"seq_len": 16}
    assert search._replay(done[recorded.config_hash()], evaluate_test=True)[0].precision == "bf16"


def test_a_voided_trial_leaves_the_search_and_runs_again(tmp_path, capsys):
    tune = _tune()
    ledger = tmp_path / "ml-1m.jsonl"
    trial = {"study": "full", "dataset": "ml-1m", "variant": "full", "trial": 1,
             "config_hash": "abc", "params": {"lr": 0.01}, "valid": {"recall@20": 0.2},
             "seconds": 10.0, "best_epoch": 3, "seconds_per_epoch": 1.0}
    tune.append_ledger(ledger, trial)
    assert tune.main(["--dataset", "ml-1m", "--ledger", str(ledger), "--void", "abc",
                      "--reason", "time-capped under contention"]) == 0
    assert tune.read_ledger(ledger) == {}
    lines = [json.loads(line) for line in ledger.read_text().splitlines()]
    assert lines[0] == trial and lines[1]["void"] == "time-capped under contention"  # kept
    assert tune.main(["--dataset", "ml-1m", "--ledger", str(ledger), "--void", "abc",
                      "--reason", "again"]) == 2
    assert "no finished trial abc" in capsys.readouterr().err
    tune.append_ledger(ledger, trial | {"valid": {"recall@20": 0.25}})  # the rerun counts
    assert tune.read_ledger(ledger)["abc"]["valid"]["recall@20"] == 0.25


def test_a_refit_trains_on_train_and_valid_for_the_chosen_epochs_and_reads_test_once(
        tmp_path, monkeypatch, capsys):
    _synthetic_lake(tmp_path)
    trained = []  # (train pairs, valid pairs, settings) of every training
    real_train = model.train.train

    def recording_train(settings, data, *args, **kwargs):
        trained.append((data.train_user.numel(), data.valid_user.numel(), settings))
        return real_train(settings, data, *args, **kwargs)

    tune = _tune()
    monkeypatch.setattr(tune, "train", recording_train)
    ledger = tmp_path / f"{DATASET}.jsonl"
    args = ["--dataset", DATASET, "--variant", "bprmf", "--data-dir", str(tmp_path),
            "--ledger", str(ledger), "--grid", "bpr_pairs=interactions,users", "--no-warehouse",
            "--refit"]
    args += _tiny_settings()
    assert tune.main(args) == 0
    trials = [json.loads(line) for line in ledger.read_text().splitlines()][:2]
    assert {t["params"]["bpr_pairs"] for t in trials} == {"interactions", "users"}
    assert trials[0]["valid"] != trials[1]["valid"]  # the samplers draw different pairs
    (search_train, search_valid, _), _, (refit_train, refit_valid, refit) = trained
    assert refit_valid == 0 and refit_train == search_train + search_valid
    best = max(trials, key=lambda t: t["valid"]["recall@20"])
    assert refit.keep_epoch == "last" and refit.epochs == best["best_epoch"]
    assert refit.bpr_pairs == best["params"]["bpr_pairs"]
    records = [json.loads(line) for line in ledger.read_text().splitlines()]
    chosen, done = records[2], records[3]
    assert chosen["chosen"] and chosen["config_hash"] == best["config_hash"]
    assert done["refit"] and done["refit_of"] == best["config_hash"] and "test" in done
    assert done["epochs_run"] == best["best_epoch"] and done["best_epoch"] == best["best_epoch"]
    assert all("test" not in r for r in records[:3])  # the test split: the refit's alone
    row = next(line for line in tune.report(ledger).splitlines() if line.startswith("| bprmf"))
    assert f"| {done['test']['recall@20']:.4f} |" in row
    # rerun: nothing trains again
    trained.clear()
    assert tune.main(args) == 0 and trained == []
    assert "refit" in capsys.readouterr().out


def test_the_users_sampler_weighs_every_user_the_same():
    from model.train import TrainingRun

    tables = synthetic_tables(n_users=30, n_items=120, n_pairs=900, n_attributes=5,
                              n_triples=30, sequence_length=5, seed=4)
    data = build_data(tables)
    run = TrainingRun(TrainSettings(variant="bprmf", bpr_pairs="users"), data,
                      Path("/nonexistent"), log=lambda _m: None)
    users, items = map(torch.cat, zip(*(run.bpr_pairs() for _ in range(20)), strict=True))
    assert users.numel() == 20 * data.train_user.numel()
    pairs = set(zip(data.train_user.tolist(), data.train_item.tolist(), strict=True))
    assert all(p in pairs for p in zip(users.tolist(), items.tolist(), strict=True))
    counts = torch.bincount(users, minlength=data.n_users).float()
    active = torch.bincount(data.train_user, minlength=data.n_users) > 0
    degree = torch.bincount(data.train_user, minlength=data.n_users).float()
    # uniform over users, unlike the interactions sampler (∝ the user's train pairs)
    assert counts[active].std() / counts[active].mean() < 0.1
    assert torch.corrcoef(torch.stack([counts[active], degree[active]]))[0, 1] < 0.3


def test_shards_split_a_search_and_the_last_one_reads_test_once(tmp_path, monkeypatch, capsys):
    _synthetic_lake(tmp_path)
    trained = []  # the lr of every training, and whether it read the test split
    real_train = model.train.train

    def recording_train(settings, data, *args, **kwargs):
        trained.append((settings.lr, settings.evaluate_test))
        return real_train(settings, data, *args, **kwargs)

    tune = _tune()
    monkeypatch.setattr(tune, "train", recording_train)
    ledger, args = _bprmf_search(tmp_path, "lr=0.001,0.01,0.05")

    assert tune.main([*args, "--shard", "2/2"]) == 0  # trials 2 (of 1, 2, 3): no choice yet
    assert trained == [(0.01, False)]
    assert "trials [1, 3] are not in" in capsys.readouterr().out
    assert tune.main([*args, "--shard", "1/2"]) == 0  # trials 1 and 3, then the choice
    assert trained[1:3] == [(0.001, False), (0.05, False)] and trained[3][1] is True
    records = [json.loads(line) for line in ledger.read_text().splitlines()]
    assert [r["trial"] for r in records[:3]] == [2, 1, 3] and len(records) == 4
    best = max(records[:3], key=lambda t: (t["valid"]["recall@20"], -t["seconds"]))
    assert records[3]["chosen"] and records[3]["config_hash"] == best["config_hash"]
    assert "test" in records[3]
    trained.clear()
    assert tune.main([*args, "--shard", "2/2"]) == 0  # a late worker: nothing, no second read
    assert trained == [] and "test already read" in capsys.readouterr().out
    # a worker that looked its trials up before the other one concluded: the choice re-reads
    # the ledger under the lock and finds the test read made meanwhile
    before = {r["trial"]: r for r in records[:3]}
    monkeypatch.setattr(tune.Search, "lookup", lambda self, number, params: before[number])
    assert tune.main([*args, "--shard", "2/2"]) == 0
    assert trained == [] and "test already read" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        tune.main([*args, "--shard", "3/2"])


def test_the_study_lock_keeps_a_second_worker_waiting(tmp_path, capsys):
    import threading

    tune = _tune()
    ledger = tmp_path / "ml-1m.jsonl"
    order = []
    second_waiting = threading.Event()

    def second_worker():
        second_waiting.set()
        with tune.study_lock(ledger, "lightgcn"):
            order.append("second")

    with tune.study_lock(ledger, "lightgcn"):
        worker = threading.Thread(target=second_worker)
        worker.start()
        second_waiting.wait()
        worker.join(timeout=0.5)
        assert worker.is_alive()  # blocked on the lock
        order.append("first")
    worker.join(timeout=10)
    assert order == ["first", "second"]
    assert "held by tune.py concluding lightgcn (pid" in capsys.readouterr().out
    with tune.study_lock(ledger, "lightgcn"), tune.study_lock(ledger, "kgat"):
        pass  # another study of the same ledger is not kept waiting


def test_a_warm_leader_rebuilds_the_lost_checkpoint_without_reading_test(
        tmp_path, monkeypatch, capsys):
    import shutil

    _synthetic_lake(tmp_path)
    splits = _ranked_splits(monkeypatch)
    ledger, args = _bprmf_search(tmp_path, "lr=0.001,0.05")
    tune = _tune()
    assert tune.main([*args, "--warm-leader"]) == 0
    assert "nothing to warm" in capsys.readouterr().out
    assert tune.main([*args, "--no-test"]) == 0
    trials = [json.loads(line) for line in ledger.read_text().splitlines()]
    leader = max(trials, key=lambda t: (t["valid"]["recall@20"], -t["seconds"]))
    shutil.rmtree(tmp_path / "models")  # a new machine

    splits.clear()
    assert tune.main([*args, "--warm-leader"]) == 0
    assert f"trial {leader['trial']} leads" in capsys.readouterr().out
    assert "test" not in splits and "valid" in splits
    assert len(ledger.read_text().splitlines()) == 2  # nothing recorded: it chose nothing

    splits.clear()
    assert tune.main(args) == 0  # the test read: the warm replay is finished, no epoch trains
    out = capsys.readouterr().out
    assert "finished run" in out and " epoch 1:" not in out
    assert splits.count("test") == 1
    final = json.loads(ledger.read_text().splitlines()[-1])
    assert final["chosen"] and final["config_hash"] == leader["config_hash"]
    assert final["replay"]["valid"] == leader["valid"]
    assert final["replay"]["warm"] and final["replay"]["seconds"] > 0
    assert tune.main([*args, "--warm-leader"]) == 0  # the read is done: nothing to warm
    assert "the study's test read is done" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        tune.main([*args, "--warm-leader", "--refit"])

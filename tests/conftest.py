"""Shared fixtures: the real ../shared data (or a skip), a loopback server, a temporary data dir."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest

from tests.support.http_server import LoopbackServer

REPO = Path(__file__).resolve().parents[1]
# Two item chunks in tests (assets/chunks.py reads it when the code location is imported, and
# the step processes of a multiprocess run inherit it): a chunk backfill is then two runs.
os.environ.setdefault("KG4REC_ITEM_CHUNKS", "2")


def shared_data_dir() -> Path:
    return Path(os.environ.get("KG4REC_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The licensed real data staged beside the checkout; tests that need it skip without it."""
    path = shared_data_dir()
    if not (path / "SOURCES.md").is_file():
        pytest.skip(f"real data not available at {path} (set KG4REC_SHARED_DATA to its location)")
    return path


@pytest.fixture
def server():
    with LoopbackServer() as srv:
        yield srv


@pytest.fixture
def data_dir(tmp_path, monkeypatch) -> Path:
    """A fresh data directory (lake, warehouse, caches) for one test."""
    path = tmp_path / "data"
    monkeypatch.setenv("KG4REC_DATA_DIR", str(path))
    monkeypatch.delenv("KG4REC_MIRROR", raising=False)
    return path


def pytest_configure(config):
    warnings.filterwarnings("ignore", category=DeprecationWarning, module="torch_geometric")


@pytest.fixture
def one_torch_thread():
    """Model tests on tiny tensors: a second thread only adds contention (and noise)."""
    import torch  # here, not at the top: most tests never import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

"""warehouse.files.atomic_path: the previous file or the new one, never half of one."""

import os
import stat

import pytest

from warehouse.files import atomic_path, atomic_write_bytes, atomic_write_json


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "t.bin"
    atomic_write_bytes(target, b"good")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("crash mid-write")
    assert target.read_bytes() == b"good"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.bin"]


def test_new_files_are_readable_like_any_new_file_and_directories_are_made(tmp_path):
    target = atomic_write_json(tmp_path / "a" / "b.json", {"x": 1}, sort_keys=True)
    assert target.read_text() == '{"x": 1}'
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask  # not mkstemp's 0600

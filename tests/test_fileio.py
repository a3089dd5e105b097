import json

import pytest

from litediff_core.fileio import atomic_file, replace_dir, write_json_atomic


def test_atomic_writes_replace_whole_files_and_leave_nothing_behind(tmp_path):
    path = tmp_path / "m.json"
    write_json_atomic(path, {"a": 1})
    write_json_atomic(path, {"a": 2, "path": tmp_path})  # default=str for paths
    assert json.loads(path.read_text()) == {"a": 2, "path": str(tmp_path)}
    with pytest.raises(RuntimeError):
        with atomic_file(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("the saver broke")
    assert json.loads(path.read_text())["a"] == 2  # the old file, whole
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_replace_dir_swaps_a_folder_whole(tmp_path):
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "x").write_text("new")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "old-only").write_text("old")
    replace_dir(tmp_path / "new", tmp_path / "run")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["x"]

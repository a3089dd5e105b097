"""Sweeps on Ray: a local Ray with two CPU workers runs a sweep into one store, with the same
results as the sequential sweep; unreachable addresses and a missing Ray are refused at once."""

import json
import os
import sys
import time

import pytest

from litediff_core.cli import main
from litediff_core.runs import RunStore
from test_runs import EVAL, base_folder  # noqa: F401 (fixture)

SWEEP = """
recipe:
  base: {base}
  dataset: fashion-mnist
  stages:
    - stage: structured-prune
      config: {{ratio: 0.3, importance: l1}}
  eval: {eval}
grid:
  0.ratio: [0.3, 0.5]
"""


@pytest.fixture
def ray_installed():
    """Ray (the optional extra); required under CI=true, where ./run tests installs it."""
    try:
        import ray  # noqa: F401
    except ImportError:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("ray is not installed (requirements-dev.txt installs it)")
        pytest.skip("the optional extra: pip install 'litediff-lab[ray]'")


@pytest.fixture
def sweep_file(tmp_path, base_folder):
    path = tmp_path / "sweep.yaml"
    path.write_text(SWEEP.format(base=base_folder, eval=json.dumps(EVAL)))
    return path


def test_a_sweep_on_a_local_ray_of_two_workers_fills_one_store_like_a_sequential_one(
        ray_installed, sweep_file, tmp_path, capsys):
    assert main(["sweep", str(sweep_file), "--store", str(tmp_path / "seq"),
                 "--device", "cpu"]) == 0
    capsys.readouterr()
    assert main(["sweep", str(sweep_file), "--store", str(tmp_path / "ray"), "--device", "cpu",
                 "--ray", "local", "--ray-cpus", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["runs"]) == 2 and out["failed"] == []
    seq, ray = RunStore(tmp_path / "seq").table(), RunStore(tmp_path / "ray").table()
    assert sorted(ray["id"]) == sorted(seq["id"]) == sorted(out["runs"])
    assert (ray["status"] == "done").all()
    ray, seq = ray.set_index("id"), seq.set_index("id")
    for run_id in out["runs"]:  # same models, same samples: the same figures
        assert ray.loc[run_id, "params"] == seq.loc[run_id, "params"]
        assert ray.loc[run_id, "fid"] == pytest.approx(seq.loc[run_id, "fid"], rel=1e-3)
    # nothing half-written: only the two run folders (and the shared cache) are in the store
    names = sorted(p.name for p in (tmp_path / "ray").iterdir())
    assert names == sorted(out["runs"] + ["_cache"]) or names == sorted(out["runs"])


def test_an_address_nothing_answers_at_is_refused_within_seconds(ray_installed, sweep_file,
                                                                 tmp_path, capsys):
    start = time.monotonic()
    assert main(["sweep", str(sweep_file), "--store", str(tmp_path / "s"),
                 "--ray", "127.0.0.1:9"]) == 2
    assert time.monotonic() - start < 15
    err = capsys.readouterr().err
    assert "no Ray cluster answers at 127.0.0.1:9" in err and "Traceback" not in err
    assert main(["sweep", str(sweep_file), "--store", str(tmp_path / "s"), "--ray",
                 "nonsense"]) == 2
    assert "is not host:port" in capsys.readouterr().err
    assert not (tmp_path / "s").exists() or not any((tmp_path / "s").iterdir())


def test_without_ray_installed_the_message_says_how_to_get_it(sweep_file, tmp_path, capsys,
                                                              monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray → ImportError
    assert main(["sweep", str(sweep_file), "--store", str(tmp_path / "s"),
                 "--ray", "local"]) == 2
    assert "pip install 'litediff-lab[ray]'" in capsys.readouterr().err

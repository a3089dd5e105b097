"""The typed schema of a run's results (``litediff_core.results``): every stored run reads and
writes back unchanged, version 1 migrates, a newer schema is refused, and the writers write it."""

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from litediff_core.errors import LiteDiffError
from litediff_core.results import (SCHEMA_VERSION, Latency, PerImage, RecoveryCurve, RunResult,
                                   Size, StageTime)
from litediff_core.runs import RunStore

CACHED = Path(__file__).resolve().parent.parent / "cached_results"
STORED = sorted(CACHED.glob("*/metrics.json"))   # (hidden working folders excluded)


def _stored(path: Path) -> dict:
    return json.loads(path.read_text())


def test_every_stored_run_round_trips():
    assert len(STORED) >= 48
    for path in STORED:
        data = _stored(path)
        out = RunResult.from_dict(data).to_dict()
        # version 1 (most shipped runs) migrates the absolute model path of the run's build
        # folder; version 2 (runs made since) reads back as written
        assert out == {**data, "schema": SCHEMA_VERSION, "model": "model"}, path
        assert list(out) == ["schema", *(k for k in data if k != "schema")]  # order kept
        assert RunResult.from_dict(out).to_dict() == out   # and version 2 reads back the same


def test_a_stored_run_reads_as_attributes():
    r = RunResult.from_dict(_stored(CACHED / "8932f488976d" / "metrics.json"))
    assert r.size.params == 1588767 and r.size.macs_per_image == 160079472
    assert r.latency.median_ms == pytest.approx(r.latency.median_s * 1000)
    assert r.fidelity.fid_lo < r.fidelity.fid < r.fidelity.fid_hi
    assert r.per_image.speedup > 1 and r.per_image.unet_calls == {"full": 50, "cached": 0}
    assert r.quality_gate.passes is True and r.consistency.n == 256
    assert isinstance(r.recovery[0], RecoveryCurve) and r.recovery[0].stage == "distill"
    assert all(isinstance(s, StageTime) for s in r.stages) and r.environment.cpu
    assert r.method and r.train_steps and r.wall_s


def test_unknown_keys_are_kept():
    data = {"schema": 2, "size": {"params": 3, "sparse_bytes": 9}, "novel": [1, 2],
            "recovery": [{"stage": "distill", "points": [], "lr_schedule": "cosine"}]}
    r = RunResult.from_dict(data)
    assert r.size.extra == {"sparse_bytes": 9} and r.extra == {"novel": [1, 2]}
    assert r.recovery[0].extra == {"lr_schedule": "cosine"}
    assert r.to_dict() == data


def test_version_1_migrates():
    v1 = {"model": "/tmp/store/.tmp-0123456789ab-4242/model", "size": {"params": 5}}
    r = RunResult.from_dict(v1)
    assert r.model == "model" and r.to_dict() == {"schema": 2, "model": "model",
                                                  "size": {"params": 5}}
    assert v1["model"].startswith("/tmp")   # the input is left as it was
    # an evaluation's model source (not a run's build folder) is kept
    assert RunResult.from_dict({"model": "embedded"}).model == "embedded"
    assert RunResult.from_dict({"model": "/data/models/mine"}).model == "/data/models/mine"


def test_a_newer_schema_is_refused_with_a_clear_message(tmp_path):
    with pytest.raises(LiteDiffError, match=r"schema 3, newer than this LiteDiff reads \(up to 2\)"):
        RunResult.from_dict({"schema": SCHEMA_VERSION + 1})
    with pytest.raises(LiteDiffError, match="unknown schema"):
        RunResult.from_dict({"schema": "two"})
    run = tmp_path / "abc"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({"schema": 99}))
    with pytest.raises(LiteDiffError) as e:
        RunStore(tmp_path).load("abc")
    assert str(e.value).startswith("run abc in ") and "\n" not in str(e.value)


def test_a_missing_part_reads_as_none():
    r = RunResult.from_dict({})
    assert r.size is None and r.per_image is None and r.fidelity is None and r.speedup is None
    assert r.recovery is None and r.to_dict() == {"schema": SCHEMA_VERSION}
    r = RunResult.from_dict({"size": {"params": 1}})
    assert r.size.macs_per_image is None and r.size.cached_step_macs is None
    assert Latency().median_ms is None and RunResult().to_dict() == {"schema": 2}


def test_the_store_loads_typed_results_and_plain_metrics(tmp_path):
    shutil.copytree(CACHED / "8932f488976d", tmp_path / "8932f488976d",
                    ignore=shutil.ignore_patterns("model"))
    store = RunStore(tmp_path)
    run = store.load("8932f488976d")
    assert isinstance(run["result"], RunResult)
    assert run["metrics"] == run["result"].to_dict() and run["metrics"]["schema"] == 2
    row = store.table().iloc[0]
    assert row["params"] == run["result"].size.params and row["fid"] == run["result"].fidelity.fid
    assert row["fid_lo"] == run["result"].fidelity.fid_lo
    # a run without metrics (failed) loads with an empty result
    (tmp_path / "failed").mkdir()
    run = store.load("failed")
    assert run["metrics"] == {} and run["result"].size is None


@pytest.fixture
def base_folder(tmp_path, ddpm_scheduler, tiny_unet):
    from litediff_core.models import save_model

    return str(save_model(tiny_unet, ddpm_scheduler, tmp_path / "base",
                          {"dataset": "fashion-mnist"}))


def test_the_runner_writes_schema_2(tmp_path, base_folder, monkeypatch):
    from litediff_core.recipes import Recipe
    from litediff_core.runs import run_recipe, runner

    def measure(base, model_dir, recipe, device, out, progress=None):  # a quick stand-in
        return RunResult(model=str(model_dir), size=Size(params=1))

    monkeypatch.setattr(runner, "measure", measure)
    run = run_recipe(Recipe(base=base_folder, stages=[], eval={"n": 8, "steps": 2}),
                     RunStore(tmp_path / "runs"), device="cpu")
    stored = _stored(run / "metrics.json")
    assert stored == {"schema": 2, "model": "model", "size": {"params": 1},
                      "method": stored["method"], "stages": [], "notes": [], "train_steps": 0,
                      "wall_s": 0}


def test_remeasure_writes_schema_2_and_keeps_the_old_figures(tmp_path, monkeypatch):
    import importlib

    from litediff_core import models

    measure = importlib.import_module("litediff_core.runs.measure")  # (runs.measure: a function)

    run_id = "8932f488976d"
    shutil.copytree(CACHED / run_id, tmp_path / run_id, ignore=shutil.ignore_patterns("model"))
    (tmp_path / run_id / "model").mkdir()
    path = tmp_path / run_id / "metrics.json"  # as stored before schema 2 (the shipped one
    old = _stored(path)                         # may have been re-timed since)
    old.pop("schema", None)
    path.write_text(json.dumps(old))
    before = _stored(path)
    monkeypatch.setattr(models, "load_base", lambda source: SimpleNamespace(unet=object()))
    monkeypatch.setattr(measure, "latency_vs_base", lambda *a: {
        "base_latency": Latency(median_s=0.2), "latency": Latency(median_s=0.1),
        "speedup": 2.0, "speedup_rounds": [1.9, 2.0, 2.1]})
    monkeypatch.setattr(measure, "image_cost_vs_base", lambda *a: PerImage(speedup=3.0))
    result = measure.remeasure_latency(RunStore(tmp_path), run_id)
    assert result.speedup == 2.0 and result.per_image.speedup == 3.0
    after = _stored(tmp_path / run_id / "metrics.json")
    assert after["schema"] == 2 and after["latency"] == {"median_s": 0.1}
    assert after["latency_history"] == before.get("latency_history", []) + [
        {k: before[k] for k in ("latency", "base_latency", "speedup", "speedup_rounds",
                                "per_image")}]
    kept = {k: v for k, v in before.items() if k not in (
        "latency", "base_latency", "speedup", "speedup_rounds", "per_image", "latency_history",
        "latency_remeasured")}
    assert {k: after[k] for k in kept} == kept   # nothing else changed


def test_per_image_timing_knows_when_it_was_taken_on_a_busy_machine():
    assert not PerImage(threads=2, load_average=2.9).busy   # its own 2 threads (+1)
    assert PerImage(threads=2, load_average=3.2).busy
    assert not PerImage(threads=2).busy and not PerImage(load_average=9.0).busy  # unknown

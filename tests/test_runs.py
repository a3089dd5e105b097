import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from diffusers import UNet2DModel

from litediff_core.errors import LiteDiffError
from litediff_core.models import save_model
from litediff_core.recipes import Recipe
from litediff_core.runs import RunStore, run_recipe
from tiny import TINY28

pytestmark = pytest.mark.usefixtures("fashion_mnist")

EVAL = {"n": 24, "steps": 3, "latency_batch": 2}


@pytest.fixture
def base_folder(tmp_path, ddpm_scheduler):
    torch.manual_seed(0)
    return str(save_model(UNet2DModel(**TINY28).eval(), ddpm_scheduler, tmp_path / "base",
                          {"dataset": "fashion-mnist"}))


def _recipe(base, ratio=0.5, **kw):
    return Recipe(base=base, stages=[{"stage": "structured-prune",
                                      "config": {"ratio": ratio, "importance": "l1"}}],
                  eval=EVAL, **kw)


def test_recipe_round_trips_and_its_key_ignores_the_name(tmp_path, base_folder):
    r = _recipe(base_folder, name="mine")
    assert r.stages[0]["config"]["global_pruning"] is False  # defaults made explicit
    path = tmp_path / "r.yaml"
    path.write_text(r.to_yaml())
    again = Recipe.load(path)
    assert again == r and again.key() == r.key()
    assert _recipe(base_folder, name="other").key() == r.key()
    assert _recipe(base_folder, ratio=0.3).key() != r.key()
    (tmp_path / "bad.yaml").write_text("stages: [oops")
    with pytest.raises(LiteDiffError, match="not valid YAML"):
        Recipe.load(tmp_path / "bad.yaml")
    with pytest.raises(LiteDiffError, match="unknown compression stage"):
        Recipe(stages=[{"stage": "magic"}])


def test_run_writes_a_complete_folder_and_is_reused(tmp_path, base_folder):
    store = RunStore(tmp_path / "runs")
    seen = []
    run = run_recipe(_recipe(base_folder), store, device="cpu",
                     progress=lambda d, t, m: seen.append((d, t)))
    for name in ("recipe.json", "status.json", "metrics.json", "layers.csv", "samples.png",
                 "model/unet/diffusion_pytorch_model.safetensors", "model/pruning_history.json"):
        assert (run / name).exists(), name
    assert seen and seen[-1][0] <= seen[-1][1]
    m = json.loads((run / "metrics.json").read_text())
    base_params = sum(p.numel() for p in UNet2DModel(**TINY28).parameters())
    assert m["size"]["params"] < 0.6 * base_params
    assert m["speedup"] > 0 and m["base_latency"]["batch_size"] == 2
    rounds = m["speedup_rounds"]  # alternating base / run timings: the median ratio is reported
    assert len(rounds) == 3 and rounds[0] <= m["speedup"] <= rounds[-1]
    # consistency: the run's own sampling (DDIM 3) against the dense base at DDIM 50
    assert -1 <= m["consistency"]["ssim_mean"] <= 1
    assert m["consistency"]["setup"].startswith("compressed with ddim 3 steps vs the base with "
                                                "DDIM 50 steps")
    # per image: its own 3 steps against the dense base's 50, timed in alternating rounds
    per = m["per_image"]
    assert per["unet_calls"] == {"full": 3, "cached": 0} and per["setup"]["steps"] == 3
    assert per["macs"] == 3 * m["size"]["macs_per_image"]
    assert per["base_macs"] > 16 * per["macs"]   # 50 dense steps vs 3 pruned ones
    assert len(per["speedup_rounds"]) == 3 and per["speedup"] > 1   # 3 steps of a pruned model
    assert m["fidelity"]["n_generated"] == 24 and "3 steps" in m["fidelity"]["label"]
    # paths inside a run are relative to its folder: none names the temporary folder or tmp_path
    assert m["model"] == "model" and (run / m["model"]).is_dir()
    assert ".tmp-" not in (run / "metrics.json").read_text()
    layers = store.layers(run.name)
    assert (layers["params_after"].fillna(0) <= layers["params_before"].fillna(0) + 0).all()
    assert layers["params_after"].sum() == m["size"]["params"]
    # the same recipe again is found, not recomputed
    mtime = (run / "metrics.json").stat().st_mtime_ns
    assert run_recipe(_recipe(base_folder, name="again"), store, device="cpu") == run
    assert (run / "metrics.json").stat().st_mtime_ns == mtime
    table = store.table()
    assert list(table["status"]) == ["done"] and table.loc[0, "params"] == m["size"]["params"]
    # the FID's sample count and whether the run is the base itself, as columns (not labels)
    assert table.loc[0, "n"] == EVAL["n"] == m["fidelity"]["n_generated"]
    assert not table.loc[0, "dense"]


def test_failed_and_interrupted_runs_are_marked_and_lose_nothing(tmp_path, base_folder):
    store = RunStore(tmp_path / "runs")
    stamps = [store.stamp()]  # what the dashboard keys its cached runs table by
    good = run_recipe(_recipe(base_folder), store, device="cpu")
    stamps.append(store.stamp())
    bad = Recipe(base=base_folder, eval=EVAL, stages=[
        {"stage": "structured-prune", "config": {"ratio": 0.95, "importance": "l1"}}])
    with pytest.raises(LiteDiffError):
        run_recipe(bad, store, device="cpu")
    status = RunStore.status(store.run_dir(bad))
    assert status["status"] == "failed" and status["error"]
    assert not (store.run_dir(bad) / "model").exists()
    # a run killed mid-way leaves a hidden temp folder whose process is gone
    pid = _dead_pid()
    dead = store.root / f".tmp-deadbeef0000-{pid}"
    dead.mkdir()
    (dead / "status.json").write_text(json.dumps({"status": "running", "pid": pid}))
    (dead / "recipe.json").write_text(json.dumps(_recipe(base_folder, ratio=0.3).to_dict()))
    stamps.append(store.stamp())
    records = store.records()
    assert [run_id for run_id, _, _ in records] == list(store.table()["id"])
    assert store.table(records).equals(store.table())  # the dashboard reads each run once
    table = store.table().set_index("id")
    assert table.loc[good.name, "status"] == "done"
    assert table.loc[store.run_dir(bad).name, "status"] == "failed"
    assert table.loc[dead.name, "status"] == "interrupted"
    assert table.loc[dead.name, "error"] == "interrupted"
    assert (good / "metrics.json").exists()
    # the next run in the store removes it (here: one already run, reused)
    assert run_recipe(_recipe(base_folder), store, device="cpu") == good
    assert not dead.exists() and dead.name not in set(store.table()["id"])
    stamps.append(store.stamp())
    store.delete(good.name)
    assert good.name not in set(store.table()["id"])
    stamps.append(store.stamp())
    assert len(set(stamps)) == len(stamps)  # every change to the table changed the stamp
    assert store.stamp() == stamps[-1]       # and nothing else does
    status = store.run_dir(bad) / "status.json"
    status.write_text(status.read_text())    # a status rewritten (a run's progress)
    os.utime(status, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert store.stamp() != stamps[-1]


def test_sweep_grid_expands_to_one_recipe_per_point(base_folder):
    from litediff_core.recipes import sweep_recipes

    recipes = sweep_recipes({"recipe": _recipe(base_folder).to_dict(),
                             "grid": {"0.ratio": [0.3, 0.5], "0.importance": ["l1", "random"]}})
    points = {(r.stages[0]["config"]["ratio"], r.stages[0]["config"]["importance"])
              for r in recipes}
    assert points == {(0.3, "l1"), (0.3, "random"), (0.5, "l1"), (0.5, "random")}
    assert len({r.key() for r in recipes}) == 4
    with pytest.raises(LiteDiffError, match="stage index"):
        sweep_recipes({"recipe": _recipe(base_folder).to_dict(), "grid": {"3.ratio": [0.1]}})


def test_cli_compress_and_runs(tmp_path, base_folder, capsys):
    from litediff_core.cli import main

    path = tmp_path / "r.yaml"
    path.write_text(_recipe(base_folder).to_yaml())
    store = str(tmp_path / "store")
    assert main(["compress", str(path), "--store", store, "--device", "cpu"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_generated"] == 24 and out["speedup"] > 0
    assert main(["runs", "--store", store]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["runs"] == 1 and "done" in captured.err
    (tmp_path / "broken.yaml").write_text("base: [")
    assert main(["compress", str(tmp_path / "broken.yaml"), "--store", store]) == 2
    # remeasure: new alternating rounds replace the figures, the old ones are kept
    run_id = RunStore(store).table().loc[0, "id"]
    before = RunStore(store).load(run_id)["metrics"]
    assert main(["runs", "--store", store, "--remeasure", "all"]) == 0
    assert list(json.loads(capsys.readouterr().out)["remeasured"]) == [run_id]
    after = RunStore(store).load(run_id)["metrics"]
    assert after["latency_history"] == [{k: before[k] for k in (
        "latency", "base_latency", "speedup", "speedup_rounds", "per_image")}]
    assert len(after["speedup_rounds"]) == 3 and after["latency_remeasured"]
    assert after["speedup"] == sorted(after["speedup_rounds"])[1]
    assert after["latency"]["batch_size"] == EVAL["latency_batch"]
    assert RunStore(store).table().loc[0, "speedup"] == after["speedup"]
    assert main(["runs", "--store", store, "--remeasure", "nosuchrun"]) == 2  # a clear message


def test_every_preset_builds_a_valid_recipe():
    from litediff_core.presets import PRESETS, preset_recipe

    for name in PRESETS:
        r = preset_recipe(name, p=0.5 if "s2" not in name and "s4" not in name else None,
                          steps=7)
        assert r.stages and r.name.startswith(name)
        assert any(s["config"].get("steps") == 7 for s in r.stages) or "quant" in name
    with pytest.raises(LiteDiffError, match="unknown preset"):
        preset_recipe("nope")
    tiny = preset_recipe("tiny-diffusion", p=0.7)
    assert tiny.stages[0]["config"]["ratio"] == 0.7


def test_a_preset_runs_end_to_end_from_the_cli(tmp_path, base_folder, capsys):
    from litediff_core.cli import main

    store = str(tmp_path / "store")
    assert main(["compress", "--preset", "mini-diffusion-taylor", "--base", base_folder,
                 "--p", "0.5", "--steps", "3", "--n", "24", "--eval-steps", "3", "--store", store, "--device", "cpu"]) == 0
    out = json.loads(capsys.readouterr().out)
    run = RunStore(store).load(out["run"].rsplit("/", 1)[-1])
    assert run["status"]["status"] == "done" and run["metrics"]["train_steps"] == 3
    assert [s["stage"] for s in run["metrics"]["stages"]] == ["structured-prune", "finetune"]


# ----------------------------------------------------------------------------- store robustness

def _dead_pid() -> int:
    """The pid of a process that has ended."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# Runs a recipe (argv: recipe JSON, store) in its own process. With LITEDIFF_TEST_QUICK_MEASURE
# the evaluation is replaced by a 2-second stand-in: these tests are about the store, and the
# real evaluation is tested above (it takes minutes on a busy 2-core machine).
RUNNER = """
import json, os, sys, time
from litediff_core import runs
from litediff_core.recipes import Recipe
from litediff_core.results import RunResult, Size
from litediff_core.runs import runner

if os.environ.get("LITEDIFF_TEST_QUICK_MEASURE"):
    def measure(base, model_dir, recipe, device, out, progress=None):
        time.sleep(2)
        return RunResult(model=str(model_dir), size=Size(params=1))
    runner.measure = measure
runs.run_recipe(Recipe.from_dict(json.loads(sys.argv[1])), runs.RunStore(sys.argv[2]),
                device="cpu")
"""


def _start_run(recipe, store, log: Path):
    env = {**os.environ, "LITEDIFF_TEST_QUICK_MEASURE": "1"}
    with log.open("w") as f:  # a file, not a pipe: a full pipe would block the run
        return subprocess.Popen([sys.executable, "-c", RUNNER, json.dumps(recipe.to_dict()),
                                 str(store.root)], env=env, stderr=f)


def _wait_for(condition, timeout=300, what="condition"):
    t0 = time.time()
    while not condition():
        assert time.time() - t0 < timeout, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_a_killed_run_shows_as_interrupted_and_is_cleaned(tmp_path, base_folder, capsys):
    from litediff_core.cli import main

    store = RunStore(tmp_path / "runs")
    long = Recipe(base=base_folder, eval=EVAL, stages=[
        {"stage": "finetune", "config": {"steps": 100_000, "batch_size": 4}}])
    proc = _start_run(long, store, tmp_path / "run.log")
    tmp = store.root / f".tmp-{store.run_dir(long).name}-{proc.pid}"
    try:
        _wait_for(lambda: RunStore.status(tmp).get("status") == "running", what="the run")
        assert len(store.table()) == 0  # running: not listed
        running = store.stamp()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL and tmp.is_dir()
    assert store.stamp() != running  # its process died: the table changes, and so the stamp
    row = store.table().set_index("id").loc[tmp.name]
    assert row["status"] == "interrupted" and row["name"] == long.name
    capsys.readouterr()
    assert main(["runs", "--store", str(store.root), "--clean"]) == 0
    assert json.loads(capsys.readouterr().out) == {"removed": [tmp.name]}
    assert not tmp.exists() and len(store.table()) == 0


def test_a_failed_run_keeps_no_model(tmp_path, base_folder, monkeypatch):
    from litediff_core.runs import runner

    def broken(base, model_dir, *args, **kwargs):
        assert (model_dir / "unet").is_dir()  # the model was saved before the failure
        raise RuntimeError("evaluation broke")

    monkeypatch.setattr(runner, "measure", broken)
    store = RunStore(tmp_path / "runs")
    recipe = _recipe(base_folder)
    with pytest.raises(RuntimeError, match="evaluation broke"):
        run_recipe(recipe, store, device="cpu")
    run = store.run_dir(recipe)
    assert RunStore.status(run) == {**RunStore.status(run), "status": "failed",
                                    "error": "RuntimeError: evaluation broke"}
    assert sorted(p.name for p in run.iterdir()) == ["log.jsonl", "recipe.json", "status.json"]
    assert [d.name for d in store.root.iterdir()] == [run.name]  # no temporary left


def test_old_stored_runs_load_with_relative_model_paths():
    store = RunStore(Path(__file__).resolve().parent.parent / "cached_results")
    table = store.table()
    assert (table["status"] == "done").sum() >= 48
    for run_id in table.loc[table["status"] == "done", "id"]:
        assert store.load(run_id)["metrics"]["model"] == "model"


def test_concurrent_runs_and_a_delete_never_corrupt_the_store(tmp_path, base_folder):
    """Two processes run different recipes into one store while a third deletes a run and this
    one reads the table: every table read succeeds and shows whole runs only; at the end the two
    runs are complete, the deleted one is gone, and no working folder is left."""
    store = RunStore(tmp_path / "runs")
    store.root.mkdir()
    old = next(p for p in sorted((Path(__file__).resolve().parent.parent / "cached_results")
                                 .iterdir()) if p.is_dir())
    shutil.copytree(old, store.root / old.name)  # a finished run to delete meanwhile
    recipes = [_recipe(base_folder, ratio=0.3), _recipe(base_folder, ratio=0.5)]
    logs = [tmp_path / f"run{i}.log" for i in range(len(recipes))]
    procs = [_start_run(r, store, log) for r, log in zip(recipes, logs)]
    seen, deleter = set(), None
    try:
        t0 = time.time()
        while any(p.poll() is None for p in procs):
            assert time.time() - t0 < 600, "runs did not finish"
            table = store.table()
            seen.update(table["status"])
            if deleter is None and any(store.root.glob(".tmp-*")):
                deleter = subprocess.Popen([sys.executable, "-m", "litediff_core.cli", "runs",
                                            "--store", str(store.root), "--delete", old.name],
                                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                           text=True)
            time.sleep(0.05)
    finally:
        for p in procs + [deleter]:
            if p is not None and p.poll() is None:
                p.kill()
    assert [p.wait() for p in procs] == [0, 0], [log.read_text()[-2000:] for log in logs]
    assert deleter is not None and deleter.wait(timeout=120) == 0, deleter.stderr.read()
    assert seen <= {"done"}  # never a half run, an unknown status or a false "interrupted"
    table = store.table()
    assert sorted(table["id"]) == sorted(store.run_dir(r).name for r in recipes)
    assert list(table["status"]) == ["done", "done"]
    assert sorted(p.name for p in store.root.iterdir()) == sorted(table["id"])
    for r in recipes:
        run = store.load(store.run_dir(r).name)
        assert Recipe.from_dict(run["recipe"]) == r and run["metrics"]["model"] == "model"
        assert (Path(run["path"]) / "model" / "unet" / "config.json").is_file()

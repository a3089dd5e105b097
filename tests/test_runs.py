import json

import pytest
import torch
from diffusers import UNet2DModel

from litediff_core.data import DEBIAN_FASHION_MNIST
from litediff_core.errors import LiteDiffError
from litediff_core.models import save_model
from litediff_core.recipes import Recipe
from litediff_core.runs import RunStore, run_recipe

pytestmark = pytest.mark.skipif(not DEBIAN_FASHION_MNIST.is_dir(),
                                reason="dataset-fashion-mnist not installed")

TINY28 = dict(sample_size=28, in_channels=1, out_channels=1, layers_per_block=1,
              block_out_channels=(16, 32), down_block_types=("DownBlock2D", "AttnDownBlock2D"),
              up_block_types=("AttnUpBlock2D", "UpBlock2D"), attention_head_dim=8,
              norm_num_groups=4)
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
    assert 0 < m["consistency"]["ssim_mean"] <= 1
    assert m["fidelity"]["n_generated"] == 24 and "3 steps" in m["fidelity"]["label"]
    layers = store.layers(run.name)
    assert (layers["params_after"].fillna(0) <= layers["params_before"].fillna(0) + 0).all()
    assert layers["params_after"].sum() == m["size"]["params"]
    # the same recipe again is found, not recomputed
    mtime = (run / "metrics.json").stat().st_mtime_ns
    assert run_recipe(_recipe(base_folder, name="again"), store, device="cpu") == run
    assert (run / "metrics.json").stat().st_mtime_ns == mtime
    table = store.table()
    assert list(table["status"]) == ["done"] and table.loc[0, "params"] == m["size"]["params"]


def test_failed_and_interrupted_runs_are_marked_and_lose_nothing(tmp_path, base_folder):
    store = RunStore(tmp_path / "runs")
    good = run_recipe(_recipe(base_folder), store, device="cpu")
    bad = Recipe(base=base_folder, eval=EVAL, stages=[
        {"stage": "structured-prune", "config": {"ratio": 0.95, "importance": "l1"}}])
    with pytest.raises(LiteDiffError):
        run_recipe(bad, store, device="cpu")
    status = RunStore.status(store.run_dir(bad))
    assert status["status"] == "failed" and status["error"]
    assert not (store.run_dir(bad) / "model").exists()
    # a run killed mid-way leaves a hidden temp folder whose process is gone
    dead = store.root / ".tmp-deadbeef0000-999999"
    dead.mkdir()
    (dead / "status.json").write_text(json.dumps({"status": "running", "pid": 999999}))
    (dead / "recipe.json").write_text(json.dumps(_recipe(base_folder, ratio=0.3).to_dict()))
    table = store.table().set_index("id")
    assert table.loc[good.name, "status"] == "done"
    assert table.loc[store.run_dir(bad).name, "status"] == "failed"
    assert table.loc[dead.name, "error"] == "interrupted"
    assert (good / "metrics.json").exists()
    store.delete(good.name)
    assert good.name not in set(store.table()["id"])


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
        "latency", "base_latency", "speedup", "speedup_rounds")}]
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

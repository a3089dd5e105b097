"""Resumable training: a fine-tune or distillation stopped at any point (an exception, SIGKILL)
resumes from its last checkpoint to exactly the model an uninterrupted run ends with."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from litediff_core.compress import CompressState, Distill, FineTune, UnstructuredPrune
from litediff_core.compress._checkpoint import Checkpointing, read_state
from litediff_core.compress._training import train_noise_prediction
from litediff_core.errors import LiteDiffError
from test_compress_train import images, same_weights, weights  # noqa: F401 (fixture)
from test_runs import base_folder  # noqa: F401 (fixture)


class Stop(Exception):
    pass


def stop_at(k):
    def on_step(step, model):
        if step == k:
            raise Stop(step)
    return on_step


def _train(unet, scheduler, images, folder, **kw):
    return train_noise_prediction(unet, scheduler, images, steps=8, lr=2e-3, batch_size=8,
                                  seed=3, ema=True, ema_decay=0.9,
                                  checkpointing=Checkpointing(folder, every_steps=2),
                                  fingerprint={"stage": "test"}, **kw)


def test_loop_resumed_after_an_interruption_ends_bit_for_bit_like_an_uninterrupted_one(
        tiny_unet, ddpm_scheduler, images, tmp_path):
    from litediff_core.compress.base import clone_model

    whole = clone_model(tiny_unet)
    full = _train(whole, ddpm_scheduler, images, tmp_path / "a")
    cut = clone_model(tiny_unet)
    with pytest.raises(Stop):  # stopped after step 5: the checkpoint of step 4 is on disk
        _train(cut, ddpm_scheduler, images, tmp_path / "b", on_step=stop_at(5))
    assert read_state(tmp_path / "b")["step"] == 4
    again = clone_model(tiny_unet)  # a new process starts from the stage's input model
    resumed = _train(again, ddpm_scheduler, images, tmp_path / "b")
    assert resumed.resumed_from == 4
    assert resumed.losses == full.losses  # the same 8 steps (4 restored, 4 taken again)
    assert same_weights(weights(again), weights(whole))  # EMA weights at the end: identical


def test_a_checkpoint_of_another_starting_model_is_refused(tiny_unet, ddpm_scheduler, images,
                                                           tmp_path):
    from litediff_core.compress.base import clone_model

    with pytest.raises(Stop):
        _train(clone_model(tiny_unet), ddpm_scheduler, images, tmp_path / "c",
               on_step=stop_at(3))
    other = clone_model(tiny_unet)
    with torch.no_grad():
        next(other.parameters()).add_(1.0)
    with pytest.raises(LiteDiffError, match="another run.*start_weights.*--restart"):
        _train(other, ddpm_scheduler, images, tmp_path / "c")


def test_a_damaged_checkpoint_is_refused_with_a_message(tiny_unet, ddpm_scheduler, images,
                                                        tmp_path):
    from litediff_core.compress.base import clone_model

    with pytest.raises(Stop):
        _train(clone_model(tiny_unet), ddpm_scheduler, images, tmp_path / "d",
               on_step=stop_at(3))
    (tmp_path / "d" / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(LiteDiffError, match="cannot be read.*--restart"):
        _train(clone_model(tiny_unet), ddpm_scheduler, images, tmp_path / "d")


def _stage_run(stage, unet, scheduler, images, folder, stop=None):
    state = CompressState.start(unet, scheduler, data=images)
    state = UnstructuredPrune(ratio=0.5).apply(state)
    state.checkpointing = Checkpointing(folder, every_steps=3)
    if stop:
        import litediff_core.compress._training as tr
        real = tr.train_noise_prediction

        def wrapped(*a, **kw):
            return real(*a, **{**kw, "on_step": _chain(kw.get("on_step"), stop_at(stop))})
        tr_patch = pytest.MonkeyPatch()
        mod = sys.modules[type(stage).__module__]
        tr_patch.setattr(mod, "train_noise_prediction", wrapped)
        try:
            with pytest.raises(Stop):
                stage.apply(state)
        finally:
            tr_patch.undo()
        return None
    return stage.apply(state)


def _chain(first, second):
    def both(step, model):
        if first is not None:
            first(step, model)
        second(step, model)
    return both


@pytest.mark.parametrize("make", [
    lambda: FineTune(steps=7, batch_size=8, lr=2e-3, ema=True, ema_decay=0.9, regrowth=0.2,
                     regrowth_every=2),
    lambda: Distill(steps=7, batch_size=8, lr=2e-3, kd_frac=0.7, ema=True, ema_decay=0.9),
], ids=["finetune-masks-regrowth", "distill"])
def test_stage_resumes_to_the_same_model(make, tiny_unet, ddpm_scheduler, images, tmp_path):
    whole = _stage_run(make(), tiny_unet, ddpm_scheduler, images, tmp_path / "whole")
    _stage_run(make(), tiny_unet, ddpm_scheduler, images, tmp_path / "cut", stop=5)
    assert read_state(tmp_path / "cut")["step"] == 3
    resumed = _stage_run(make(), tiny_unet, ddpm_scheduler, images, tmp_path / "cut")
    a, b = whole.log[-1], resumed.log[-1]
    assert b["resumed_from"] == 3 and a["resumed_from"] == 0
    assert a["losses"] == b["losses"]
    for key in ("regrowth_events", "regrown_weights", "sparsity_after"):
        assert a.get(key) == b.get(key)
    assert same_weights(weights(whole.unet), weights(resumed.unet))


# ----------------------------------------------------------------------------- SIGKILL

RECIPE = """
base: {base}
dataset: fashion-mnist
stages:
  - stage: structured-prune
    config: {{ratio: 0.3}}
  - stage: distill
    config: {{steps: 24, batch_size: 8, ema: true, ema_decay: 0.9}}
eval: {{n: 24, steps: 2, latency_batch: 2}}
"""


def _cli(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "litediff_core.cli", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def test_a_run_killed_with_sigkill_resumes_to_the_uninterrupted_result(tmp_path, base_folder):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE.format(base=base_folder))
    ref = _cli("compress", str(recipe), "--store", str(tmp_path / "ref"), "--device", "cpu",
               "--checkpoint-every", "4")
    out, err = ref.communicate(timeout=600)
    assert ref.returncode == 0, err
    store = tmp_path / "store"
    proc = _cli("compress", str(recipe), "--store", str(store), "--device", "cpu",
                "--checkpoint-every", "4")
    deadline = time.time() + 300
    ckpt = None
    while time.time() < deadline and proc.poll() is None:
        found = list((store / "_checkpoints").glob("*/1-distill/state.json"))
        if found and json.loads(found[0].read_text())["step"] >= 8:
            ckpt = found[0].parent
            break
        time.sleep(0.05)
    assert ckpt is not None, "no checkpoint appeared before the run ended"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    step = read_state(ckpt)["step"]
    assert 8 <= step < 24
    from litediff_core.runs import RunStore

    assert RunStore(store).checkpoints() == {ckpt.parent.name: {"1-distill": step}}
    again = _cli("compress", str(recipe), "--store", str(store), "--device", "cpu",
                 "--checkpoint-every", "4")
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, err
    assert f"resuming an unfinished run: 1-distill at step {step}" in err
    run = store / ckpt.parent.name
    reference = tmp_path / "ref" / ckpt.parent.name
    from safetensors.torch import load_file

    a = load_file(str(reference / "model" / "unet" / "diffusion_pytorch_model.safetensors"))
    b = load_file(str(run / "model" / "unet" / "diffusion_pytorch_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    log_a = [json.loads(line) for line in (reference / "log.jsonl").read_text().splitlines()]
    log_b = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert log_a[1]["log"]["losses"] == log_b[1]["log"]["losses"]
    assert log_b[1]["log"]["resumed_from"] == step
    assert not (store / "_checkpoints" / ckpt.parent.name).exists()  # done: removed


def test_restart_discards_the_checkpoints_of_an_unfinished_run(tmp_path, base_folder):
    from litediff_core.recipes import Recipe
    from litediff_core.runs import RunStore, run_recipe

    recipe = Recipe(base=base_folder, eval={"n": 24, "steps": 2, "latency_batch": 2},
                    stages=[{"stage": "structured-prune", "config": {"ratio": 0.3}}])
    store = RunStore(tmp_path / "store")
    stale = store.checkpoint_dir(store.run_dir(recipe).name) / "0-finetune"
    stale.mkdir(parents=True)
    (stale / "state.json").write_text(json.dumps({"format": 1, "step": 3}))
    assert store.checkpoints() == {store.run_dir(recipe).name: {"0-finetune": 3}}
    run_recipe(recipe, store, device="cpu", restart=True)
    assert store.checkpoints() == {} and not stale.exists()


def _lrs_seen(monkeypatch):
    """The learning rate of every optimizer step the loop takes (a spy on Adam.step)."""
    seen, step = [], torch.optim.Adam.step

    def spy(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", spy)
    return seen


def test_warmup_ramps_the_cosine_rate_and_resumes_exactly(tiny_unet, ddpm_scheduler, images,
                                                          tmp_path, monkeypatch):
    import math

    from litediff_core.compress.base import clone_model

    seen = _lrs_seen(monkeypatch)
    whole = clone_model(tiny_unet)
    full = _train(whole, ddpm_scheduler, images, tmp_path / "a", warmup=4)
    cosine = [2e-3 * (1 + math.cos(math.pi * k / 8)) / 2 for k in range(8)]
    want = [c * min(1.0, (k + 1) / 4) for k, c in enumerate(cosine)]
    assert seen == pytest.approx(want, rel=1e-9)
    seen.clear()
    _train(clone_model(tiny_unet), ddpm_scheduler, images, tmp_path / "plain")
    assert seen == pytest.approx(cosine, rel=1e-9)  # warmup 0: the schedule as before
    with pytest.raises(Stop):  # stopped inside the warm-up: checkpoint of step 2
        _train(clone_model(tiny_unet), ddpm_scheduler, images, tmp_path / "b", warmup=4,
               on_step=stop_at(3))
    again = clone_model(tiny_unet)
    resumed = _train(again, ddpm_scheduler, images, tmp_path / "b", warmup=4)
    assert resumed.resumed_from == 2 and resumed.losses == full.losses
    assert same_weights(weights(again), weights(whole))


def test_warmup_is_an_added_option_that_keeps_stored_keys_and_checkpoints():
    from litediff_core.compress import make_stage
    from litediff_core.compress._checkpoint import comparable
    from litediff_core.recipes import Recipe

    stages = [{"stage": "distill", "config": {"steps": 5}}]
    plain = Recipe(base="embedded", stages=stages)
    assert plain.stages[0]["config"]["warmup"] == 0
    old = json.loads(json.dumps(plain.to_dict()))
    del old["stages"][0]["config"]["warmup"]          # a recipe stored before the option
    assert Recipe.from_dict(old).key() == plain.key()
    assert Recipe(base="embedded", stages=[
        {"stage": "distill", "config": {"steps": 5, "warmup": 2}}]).key() != plain.key()
    fp_new = make_stage(stages[0]).to_dict()
    fp_old = {**fp_new, "config": {k: v for k, v in fp_new["config"].items() if k != "warmup"}}
    assert comparable(fp_old) == comparable(fp_new)
    with pytest.raises(LiteDiffError, match="warmup 9 is longer than the 5 training steps"):
        make_stage({"stage": "finetune", "config": {"steps": 5, "warmup": 9}})

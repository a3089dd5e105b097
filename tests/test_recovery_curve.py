"""Recovery curves: a training stage evaluates its model at step 0, every k steps and at the
end (FID of few samples with DPM-Solver++, ε-MSE to the teacher), without changing the training."""

import pytest
import torch
from diffusers import UNet2DModel

from litediff_core.compress import CompressState, Distill, FineTune, make_stage
from litediff_core.device import cpu_info
from litediff_core.errors import LiteDiffError
from litediff_core.recipes import Recipe
from test_compress_train import same_weights, weights
from tiny import TINY28


@pytest.fixture
def tiny28():
    torch.manual_seed(0)
    return UNet2DModel(**TINY28).eval()


@pytest.fixture
def fmnist_images(fashion_mnist):
    from litediff_core.data import load_dataset

    return load_dataset("fashion-mnist", "train").batch(torch.arange(256))


def _distill(unet, scheduler, images, **curve):
    teacher = unet
    student = CompressState.start(teacher, scheduler, dataset="fashion-mnist", data=images)
    with torch.no_grad():  # a perturbed student: the curve has something to recover
        for p in student.unet.parameters():
            p.mul_(0.7)
    return Distill(steps=6, batch_size=8, lr=3e-4, kd_frac=1.0, ema=True, ema_decay=0.9,
                   **curve).apply(student)


def test_curve_points_come_at_0_every_k_and_the_end_and_do_not_change_training(
        tiny28, ddpm_scheduler, fmnist_images):
    plain = _distill(tiny28, ddpm_scheduler, fmnist_images)
    curved = _distill(tiny28, ddpm_scheduler, fmnist_images, curve_every=4, curve_samples=50,
                      curve_sampling_steps=2)
    assert same_weights(weights(plain.unet), weights(curved.unet))
    assert plain.log[-1]["losses"] == curved.log[-1]["losses"]
    assert "curve" not in plain.log[-1]
    entry = curved.log[-1]
    points = entry["curve"]
    assert [p["step"] for p in points] == [0, 4, 6]
    assert all(p["fid"] > 0 and p["fid_lo"] <= p["fid"] <= p["fid_hi"] for p in points)
    assert points[0]["train_s"] == 0 and points[0]["train_s"] < points[1]["train_s"] \
        < points[2]["train_s"]
    # whose minutes these are: a run resumed on another machine has points of both
    assert {p["machine"] for p in points} == {cpu_info()["cpu"]}
    # the student starts away from its teacher (weights × 0.7) and distillation pulls it back
    assert points[0]["eps_mse_teacher"] > points[-1]["eps_mse_teacher"]
    assert entry["curve_label"] == ("FID of 50 samples, DPM-Solver++ 2 steps, "
                                    "litediff-fmnist-cnn-v1 features; ε-MSE on 256 held-out images")


def test_the_last_point_is_the_model_the_stage_returns(tiny28, ddpm_scheduler, fmnist_images):
    """With EMA the points describe the EMA weights (what the stage ends with)."""
    from litediff_core.compress._curve import CurveConfig, RecoveryMonitor

    out = _distill(tiny28, ddpm_scheduler, fmnist_images, curve_every=3, curve_samples=50,
                   curve_sampling_steps=2)
    monitor = RecoveryMonitor(CurveConfig(n=50, steps=2), ddpm_scheduler, "fashion-mnist",
                              teacher=tiny28)
    again = monitor(6, out.unet, 0.0)
    last = out.log[-1]["curve"][-1]
    assert again["fid"] == pytest.approx(last["fid"], rel=1e-6)
    assert again["eps_mse_teacher"] == pytest.approx(last["eps_mse_teacher"], rel=1e-6)


@pytest.mark.parametrize("options, message", [
    ({"curve_every": -1}, "curve_every must be ≥ 0"),
    ({"curve_every": 50, "steps": 10}, "more than the 10 training steps"),
    ({"curve_every": 2, "curve_samples": 8}, "at least 50"),
    ({"curve_every": 2, "curve_sampling_steps": 0}, r"curve_sampling_steps must be in \[1, 100\]"),
])
def test_curve_settings_that_make_no_sense_are_refused_before_work(options, message):
    for stage in ("finetune", "distill", "lora"):
        with pytest.raises(LiteDiffError, match=message):
            make_stage({"stage": stage, "config": {"steps": 20, **options}})


def test_curve_options_keep_the_keys_of_stored_recipes():
    """Added after runs were stored: at their defaults they leave a recipe's key unchanged."""
    stages = [{"stage": "finetune", "config": {"steps": 5}}]
    old = Recipe(base="embedded", stages=stages)
    stored = old.to_dict()
    for s in stored["stages"]:
        for k in ("curve_every", "curve_samples", "curve_sampling_steps"):
            s["config"].pop(k)
    assert Recipe.from_dict(stored).key() == old.key()
    curved = Recipe(base="embedded", stages=[{"stage": "finetune",
                                              "config": {"steps": 5, "curve_every": 1}}])
    assert curved.key() != old.key()


def test_curve_options_come_after_the_stage_own_options():
    from litediff_core.compress import describe_stage

    names = [o["name"] for o in describe_stage("finetune")]
    assert names[0] == "steps" and names[-3:] == ["curve_every", "curve_samples",
                                                  "curve_sampling_steps"]
    assert FineTune().config.curve_every == 0


def test_a_curve_names_the_machine_that_trained_it_even_after_its_run_was_retimed():
    """Points name their machine; older curves fall back to the run's evaluation environment:
    the GPU it recorded, or (runs stored before) the GPU of its first timing — not the GPU of
    a later ``litediff runs --remeasure``."""
    from litediff_core.curves import evaluated_on, trained_on
    from litediff_core.results import RunResult

    gpu_run = {"setup": {"device": "cuda"}, "environment": {"cpu": "Some CPU", "gpu": "H200"},
               "base_latency": {"gpu": "A100 (re-timed)"}}
    assert evaluated_on(RunResult.from_dict(gpu_run)) == "H200"
    older = {"setup": {"device": "cuda:0"}, "environment": {"cpu": "Some CPU"},
             "base_latency": {"gpu": "A100 (re-timed)"},
             "latency_history": [{"base_latency": {"gpu": "T4"}}]}
    assert evaluated_on(RunResult.from_dict(older)) == "T4"
    cpu_run = {"setup": {"device": "cpu"}, "environment": {"cpu": "Some CPU"}}
    assert evaluated_on(RunResult.from_dict(cpu_run)) == "Some CPU"

    points = [{"step": 0}, {"step": 250, "machine": "Xeon"}, {"step": 500, "machine": "Xeon"}]
    assert trained_on({"points": points, "machine": "EPYC"}) == ["EPYC", "Xeon"]
    assert trained_on({"points": points[:1], "machine": None}) == ["not recorded"]

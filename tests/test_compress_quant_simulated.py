import json

import pytest
import torch
import torch.nn as nn

from litediff_core.compress import (STAGES, CompressState, SimulatedQuant, load_compressed,
                                    make_stage, save_compressed)
from litediff_core.compress._calibration import calibration_inputs, recorded_steps
from litediff_core.compress.quant_simulated import act_quantizers, fake_quantize_weight
from litediff_core.errors import LiteDiffError
from litediff_core.samplers import initial_noise, make_sampler

CALIB = dict(calib_images=4, calib_steps=10, calib_every=3)


def outputs(unet, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((3, 1, 16, 16), generator=g)
    with torch.no_grad():
        return unet(x, torch.tensor([0, 250, 999])).sample


@pytest.fixture
def calibration(tiny_unet, ddpm_scheduler):
    return calibration_inputs(tiny_unet, dict(ddpm_scheduler.config), images=4, steps=10, every=3)


def error(tiny_unet, scheduler, calibration, **options):
    """Relative error of the noise prediction on the calibration batches (log) and on fresh
    inputs."""
    state = CompressState.start(tiny_unet, scheduler)
    SimulatedQuant(**{**CALIB, **options}).apply(state, calibration=calibration)
    ref = outputs(tiny_unet)
    fresh = float((outputs(state.unet) - ref).norm() / ref.norm())
    return state.log[-1]["relative_eps_error"], fresh


def test_registry_options_and_bad_values():
    assert STAGES["quant-simulated"] is SimulatedQuant
    stage = SimulatedQuant(weight_bits=4, act_bits=8, act_range="percentile")
    assert make_stage(json.loads(json.dumps(stage.to_dict()))).config == stage.config
    for bad in ({"weight_bits": 1}, {"act_bits": 1}, {"act_bits": 17}, {"percentile": 40.0},
                {"calib_every": 0}, {"act_range": "mse"}, {"calib_sampler": "euler"}):
        with pytest.raises(LiteDiffError):
            SimulatedQuant(**bad)


def test_calibration_records_every_cth_step_of_the_trajectory(tiny_unet, ddpm_scheduler):
    batches = calibration_inputs(tiny_unet, dict(ddpm_scheduler.config), images=3, steps=10,
                                 every=4, seed=7)
    sampler = make_sampler("ddim", dict(ddpm_scheduler.config))
    sampler.set_timesteps(10)
    assert [b.step for b in batches] == recorded_steps(10, 4) == [0, 4, 8]
    assert [b.timestep for b in batches] == [int(sampler.timesteps[i]) for i in (0, 4, 8)]
    assert batches[0].timestep == 999  # trailing spacing starts at the last training step
    assert torch.equal(batches[0].sample, initial_noise(3, (1, 16, 16), 7))  # fixed noise
    # the recorded inputs follow the DDIM trajectory of the fp32 model
    x = batches[0].sample
    with torch.no_grad():
        for i, t in enumerate(sampler.timesteps[:4]):
            x = sampler.step(tiny_unet(x, t).sample, t, x)
    assert torch.allclose(batches[1].sample, x, atol=1e-6)
    assert batches[2].timesteps().tolist() == [batches[2].timestep] * 3


def test_w8a8_is_close_and_labelled(tiny_unet, ddpm_scheduler, calibration):
    state = CompressState.start(tiny_unet, ddpm_scheduler)
    SimulatedQuant(**CALIB).apply(state, calibration=calibration)
    log = state.log[-1]
    assert log["label"] == "W8A8" and log["relative_eps_error"] < 0.1
    assert log["calibration_timesteps"] == [b.timestep for b in calibration]
    assert log["calibration_samples"] == 4 * len(recorded_steps(10, 3))
    assert state.notes[-1].startswith("simulated: no speed or memory gain")
    ref = outputs(tiny_unet)
    assert float((outputs(state.unet) - ref).norm() / ref.norm()) < 0.1
    # first and last conv protected; other layers get an activation quantizer
    quantizers = act_quantizers(state.unet)
    assert "conv_in" not in quantizers and "conv_out" not in quantizers
    assert "down_blocks.0.resnets.0.conv1" in quantizers and log["layers"] == len(quantizers)
    assert torch.equal(state.unet.conv_in.weight, tiny_unet.conv_in.weight)
    # the teacher is untouched
    assert not act_quantizers(tiny_unet)


def test_w4_is_worse_than_w8(tiny_unet, ddpm_scheduler, calibration):
    w8 = error(tiny_unet, ddpm_scheduler, calibration, weight_bits=8)
    w4 = error(tiny_unet, ddpm_scheduler, calibration, weight_bits=4)
    assert w4[0] > w8[0] and w4[1] > w8[1]


def test_more_bits_lower_error(tiny_unet, ddpm_scheduler, calibration):
    weights = [error(tiny_unet, ddpm_scheduler, calibration, weight_bits=b, act_bits=0)[0]
               for b in (2, 3, 4, 6, 8, 12)]
    assert all(a > b for a, b in zip(weights, weights[1:])) and weights[-1] < 1e-3
    acts = [error(tiny_unet, ddpm_scheduler, calibration, weight_bits=16, act_bits=b)[0]
            for b in (4, 6, 8, 16)]
    assert all(a > b for a, b in zip(acts, acts[1:])) and acts[-1] < 1e-3


def test_weight_grid_per_channel():
    torch.manual_seed(0)
    w = torch.randn(6, 4, 3, 3) * torch.arange(1, 7).view(6, 1, 1, 1)
    q = fake_quantize_weight(w, 4, per_channel=True)
    for c in range(6):
        scale = w[c].abs().max() / 7
        steps = q[c] / scale
        assert torch.allclose(steps, steps.round(), atol=1e-4) and steps.round().abs().max() == 7
    assert (q - w).abs().max() <= (w.abs().amax(dim=(1, 2, 3)) / 7 / 2).max() + 1e-6
    per_tensor = fake_quantize_weight(w, 4, per_channel=False)
    assert float((per_tensor - w).norm()) > float((q - w).norm())


def test_percentile_range_is_narrower_than_minmax(tiny_unet, ddpm_scheduler, calibration):
    ranges = {}
    for mode in ("minmax", "percentile"):
        state = CompressState.start(tiny_unet, ddpm_scheduler)
        SimulatedQuant(**CALIB, act_range=mode, percentile=99.0).apply(state,
                                                                       calibration=calibration)
        ranges[mode] = {n: q.scale for n, q in act_quantizers(state.unet).items()}
    assert all(ranges["percentile"][n] <= ranges["minmax"][n] * 1.0001 for n in ranges["minmax"])
    assert sum(ranges["percentile"].values()) < sum(ranges["minmax"].values())


def test_save_and_reload_identical_outputs(tiny_unet, ddpm_scheduler, calibration, tmp_path):
    state = CompressState.start(tiny_unet, ddpm_scheduler)
    SimulatedQuant(**CALIB, weight_bits=4).apply(state, calibration=calibration)
    save_compressed(state, tmp_path / "model", {})
    unet, _, _ = load_compressed(tmp_path / "model")
    assert {n: q.to_dict() for n, q in act_quantizers(unet).items()} == \
        {n: q.to_dict() for n, q in act_quantizers(state.unet).items()}
    assert torch.equal(outputs(unet), outputs(state.unet))


def test_calibrates_by_itself_and_gradients_pass(tiny_unet, ddpm_scheduler):
    state = CompressState.start(tiny_unet, ddpm_scheduler)
    SimulatedQuant(**CALIB).apply(state)
    assert state.log[-1]["calibration_timesteps"][0] == 999
    x = torch.randn(2, 1, 16, 16)
    state.unet(x, torch.tensor([3, 500])).sample.square().mean().backward()
    grad = state.unet.down_blocks[0].resnets[0].conv1.weight.grad
    assert grad is not None and grad.abs().sum() > 0  # straight-through: fine-tuning works
    assert isinstance(state.unet.conv_in, nn.Conv2d)

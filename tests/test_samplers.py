"""Samplers: agreement with diffusers, fair (seed-determined, batch-size independent) noise, and
updates checked against closed forms on models whose exact noise prediction is known."""

import math
import types

import numpy as np
import pytest
import torch

from litediff_core.errors import LiteDiffError
from litediff_core.samplers import SAMPLERS, generate, grid, initial_noise, make_sampler

# (sampler, kwargs) covering every sampler and every stochastic variant
VARIANTS = [
    ("ddpm", {}),
    ("ddim", {}),
    ("ddim", {"eta": 0.5}),
    ("dpm-solver++", {}),
    ("ams", {}),
    ("ams", {"base": "ddpm"}),
    ("ams", {"eta": 1.0, "c": 0.1, "lam_max": 0.3}),
]
IDS = [f"{name}{kw}" for name, kw in VARIANTS]


@pytest.fixture
def cfg(ddpm_scheduler):
    return dict(ddpm_scheduler.config)


def alphas_cumprod(cfg) -> torch.Tensor:
    from diffusers import DDPMScheduler

    return DDPMScheduler(**cfg).alphas_cumprod.double()


def trailing(steps: int, T: int = 1000) -> list:
    """Trailing timesteps, computed independently of diffusers."""
    return [round(T - k * T / steps) - 1 for k in range(steps)]


class GaussianOracle(torch.nn.Module):
    """The exact ε-prediction E[ε | x_t] for data x0 ~ N(mu, s²) i.i.d. per pixel."""

    def __init__(self, abar, mu=0.2, s=0.3, size=16):
        super().__init__()
        self.abar, self.mu, self.s = abar, mu, s
        self.config = types.SimpleNamespace(in_channels=1, sample_size=size)

    def forward(self, x, t):
        a = self.abar[int(t)]
        eps = (1 - a).sqrt() * (x.double() - a.sqrt() * self.mu) / (a * self.s**2 + 1 - a)
        return types.SimpleNamespace(sample=eps.float())


class PointOracle(torch.nn.Module):
    """The exact ε for one known image x0: ε = (x_t - sqrt(ᾱ) x0) / sqrt(1 - ᾱ)."""

    def __init__(self, abar, x0):
        super().__init__()
        self.abar, self.x0 = abar, x0.double()
        self.config = types.SimpleNamespace(in_channels=x0.shape[0], sample_size=x0.shape[-1])

    def forward(self, x, t):
        a = self.abar[int(t)]
        eps = (x.double() - a.sqrt() * self.x0) / (1 - a).sqrt()
        return types.SimpleNamespace(sample=eps.float())


class FirstInput(torch.nn.Module):
    """Wraps a UNet and remembers the first sample it is called with."""

    def __init__(self, unet):
        super().__init__()
        self.unet, self.config, self.first = unet, unet.config, None

    def forward(self, x, t):
        if self.first is None:
            self.first = x.clone()
        return self.unet(x, t)


# ------------------------------------------------------------------- agreement with diffusers

def test_ddim_reproduces_diffusers_ddim_pipeline(tiny_unet, cfg):
    from diffusers import DDIMPipeline, DDIMScheduler

    scheduler = DDIMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02,
                              beta_schedule="linear", clip_sample=True, prediction_type="epsilon",
                              timestep_spacing="trailing")
    pipe = DDIMPipeline(unet=tiny_unet, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    theirs = pipe(batch_size=3, generator=torch.Generator("cpu").manual_seed(7), eta=0.0,
                  num_inference_steps=10, output_type="np").images  # N×H×W×C in [0, 1]
    ours = generate(tiny_unet, cfg, "ddim", steps=10, n=3, seed=7, batch_size=3)
    ours = ((ours + 1) / 2).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


@pytest.mark.parametrize("ams_kw, twin, twin_kw", [
    ({"lam_max": 0.0, "c": 0.0}, "ddim", {}),
    ({"lam_max": 0.0, "c": 0.0, "eta": 0.5}, "ddim", {"eta": 0.5}),
    ({"lam_max": 0.0, "c": 0.0, "base": "ddpm"}, "ddpm", {}),
])
def test_ams_without_momentum_and_second_moment_is_its_base(tiny_unet, cfg, ams_kw, twin, twin_kw):
    # a smooth model: float rounding stays at rounding level
    oracle = GaussianOracle(alphas_cumprod(cfg))
    ams = generate(oracle, cfg, "ams", steps=10, n=3, seed=2, **ams_kw)
    base = generate(oracle, cfg, twin, steps=10, n=3, seed=2, **twin_kw)
    torch.testing.assert_close(ams, base, atol=2e-6, rtol=0)
    # a random UNet amplifies rounding differences over the steps (as a batch size change does)
    ams = generate(tiny_unet, cfg, "ams", steps=10, n=3, seed=2, batch_size=3, **ams_kw)
    base = generate(tiny_unet, cfg, twin, steps=10, n=3, seed=2, batch_size=3, **twin_kw)
    torch.testing.assert_close(ams, base, atol=2e-3, rtol=0)


def test_ams_momentum_changes_the_result(tiny_unet, cfg):
    ams = generate(tiny_unet, cfg, "ams", steps=10, n=3, seed=2, batch_size=3, lam_max=0.3)
    ddim = generate(tiny_unet, cfg, "ddim", steps=10, n=3, seed=2, batch_size=3)
    assert (ams - ddim).abs().max() > 1e-2


# ------------------------------------------------------------------- fair noise

def test_initial_noise_depends_on_seed_only():
    a = initial_noise(4, (1, 16, 16), seed=3)
    assert a.shape == (4, 1, 16, 16)
    assert torch.equal(a, initial_noise(4, (1, 16, 16), seed=3))
    assert not torch.allclose(a, initial_noise(4, (1, 16, 16), seed=4))
    assert torch.equal(a, torch.randn((4, 1, 16, 16), generator=torch.Generator().manual_seed(3)))


def test_same_initial_noise_for_every_sampler_and_model(tiny_unet, cfg):
    from diffusers import UNet2DModel

    torch.manual_seed(1)
    other = UNet2DModel(sample_size=16, in_channels=1, out_channels=1, layers_per_block=1,
                        block_out_channels=(8, 16), down_block_types=("DownBlock2D", "DownBlock2D"),
                        up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4).eval()
    expected = initial_noise(3, (1, 16, 16), seed=5)
    for model in (tiny_unet, other):
        for name in SAMPLERS:
            probe = FirstInput(model)
            generate(probe, cfg, name, steps=2, n=3, seed=5, batch_size=3)
            assert torch.equal(probe.first, expected), (name, type(model).__name__)
    probe = FirstInput(tiny_unet)
    generate(probe, cfg, "ddim", steps=2, n=3, seed=6, batch_size=3)
    assert not torch.allclose(probe.first, expected)


@pytest.mark.parametrize("name, kw", VARIANTS, ids=IDS)
def test_results_do_not_depend_on_batch_size(tiny_unet, cfg, name, kw):
    small = generate(tiny_unet, cfg, name, steps=10, n=5, seed=11, batch_size=2, **kw)
    whole = generate(tiny_unet, cfg, name, steps=10, n=5, seed=11, batch_size=5, **kw)
    torch.testing.assert_close(small, whole, atol=2e-3, rtol=0)


@pytest.mark.parametrize("name, kw", VARIANTS, ids=IDS)
def test_deterministic_given_seed_and_sane_output(tiny_unet, cfg, name, kw):
    a = generate(tiny_unet, cfg, name, steps=10, n=4, seed=3, batch_size=4, **kw)
    b = generate(tiny_unet, cfg, name, steps=10, n=4, seed=3, batch_size=4, **kw)
    assert torch.equal(a, b)
    assert a.shape == (4, 1, 16, 16) and a.dtype == torch.float32 and a.device.type == "cpu"
    assert torch.isfinite(a).all() and a.min() >= -1 and a.max() <= 1
    c = generate(tiny_unet, cfg, name, steps=10, n=4, seed=4, batch_size=4, **kw)
    assert (a - c).abs().max() > 1e-2


def test_stochastic_samplers_use_fresh_noise_per_step(cfg):
    """With the initial noise fixed, DDPM results still vary with the step noise: the samples of
    two images started from the same x_T differ (each image has its own step-noise stream)."""
    abar = alphas_cumprod(cfg)
    model = GaussianOracle(abar)
    s = make_sampler("ddpm", cfg)
    s.set_timesteps(10)
    from litediff_core.samplers._common import step_generators

    x = initial_noise(1, (1, 16, 16), 0).repeat(2, 1, 1, 1)
    gens = step_generators(0, [0, 1])
    for t in s.timesteps:
        x = s.step(model(x, t).sample, t, x, generator=gens)
    assert (x[0] - x[1]).abs().max() > 1e-2


# ------------------------------------------------------------------- updates vs closed forms

def test_every_sampler_lands_on_the_image_an_exact_model_knows(cfg):
    x0 = torch.linspace(-0.9, 0.9, 256).reshape(1, 16, 16)
    model = PointOracle(alphas_cumprod(cfg), x0)
    for name, kw in VARIANTS:
        if kw.get("c", 1.0) < 1:  # an active second moment rescales the last step too
            continue
        out = generate(model, cfg, name, steps=10, n=2, seed=0, batch_size=2, **kw)
        torch.testing.assert_close(out, x0.expand(2, -1, -1, -1), atol=1e-3, rtol=0,
                                   msg=f"{name} {kw}")


def _linear_gaussian_ddim(abar, steps, mu, s, eta_one=False):
    """For x0 ~ N(mu, s²), DDIM (eta=0) and DDPM (= DDIM eta=1) are affine per pixel:
    x - sqrt(ᾱ) mu -> g (x - sqrt(ᾱ) mu) + σ z. Returns (product of the g, final variance of
    the added noise)."""
    ts = trailing(steps)
    gain, var = 1.0, 0.0
    for k, t in enumerate(ts):
        a = float(abar[t])
        a2 = float(abar[ts[k + 1]]) if k + 1 < steps else 1.0
        d = a * s**2 + 1 - a
        sigma2 = (1 - a2) / (1 - a) * (1 - a / a2) if eta_one else 0.0
        g = (math.sqrt(a * a2) * s**2 + math.sqrt(1 - a2 - sigma2) * math.sqrt(1 - a)) / d
        gain, var = g * gain, g * g * var + sigma2
    return gain, var


def test_ddim_matches_the_closed_form_for_gaussian_data(cfg):
    abar, mu, s = alphas_cumprod(cfg), 0.2, 0.3
    z = initial_noise(4, (1, 16, 16), seed=1).double()
    out = generate(GaussianOracle(abar, mu, s), cfg, "ddim", steps=20, n=4, seed=1,
                   clip_sample=False).double()
    gain, _ = _linear_gaussian_ddim(abar, 20, mu, s)
    expected = mu + gain * (z - math.sqrt(float(abar[999])) * mu)
    torch.testing.assert_close(out, expected.clamp(-1, 1), atol=2e-4, rtol=0)


@pytest.mark.parametrize("name, kw", [("ddpm", {}), ("ddim", {"eta": 1.0})])
def test_ancestral_sampling_matches_the_closed_form_for_gaussian_data(cfg, name, kw):
    abar, mu, s, steps = alphas_cumprod(cfg), 0.2, 0.3, 20
    out = generate(GaussianOracle(abar, mu, s, size=32), cfg, name, steps=steps, n=16, seed=0,
                   clip_sample=False, **kw).double()
    gain, var = _linear_gaussian_ddim(abar, steps, mu, s, eta_one=True)
    exp_mean = mu - gain * math.sqrt(float(abar[999])) * mu
    exp_std = math.sqrt(gain**2 + var)
    assert abs(out.mean().item() - exp_mean) < 0.01
    assert abs(out.std().item() / exp_std - 1) < 0.03   # 16384 pixels: 1 % standard error


def test_dpm_solver_is_more_accurate_than_ddim_on_the_probability_flow(cfg):
    abar, mu, s = alphas_cumprod(cfg), 0.2, 0.3
    z = initial_noise(4, (1, 16, 16), seed=1).double()
    a_T = float(abar[999])
    exact = mu + s * (z - math.sqrt(a_T) * mu) / math.sqrt(a_T * s**2 + 1 - a_T)
    model = GaussianOracle(abar, mu, s)
    err = {}
    for name, kw in (("ddim", {}), ("dpm-solver++", {}), ("dpm-solver++", {"order": 1})):
        out = generate(model, cfg, name, steps=50, n=4, seed=1, clip_sample=False, **kw).double()
        err[name + str(kw.get("order", ""))] = (out - exact.clamp(-1, 1)).abs().max().item()
    assert err["dpm-solver++"] < 0.25 * err["ddim"]   # measured: 0.019 vs 0.106
    assert err["dpm-solver++"] < 0.1 * s
    # first-order DPM-Solver++ is DDIM (eta=0)
    assert err["dpm-solver++1"] == pytest.approx(err["ddim"], abs=1e-4)


def test_ams_follows_its_documented_recursion(cfg):
    """Reference: the module docstring's recursion — heavy-ball momentum on the slope
    g = ε (DDIM base, eta=0, no clipping) in x̄ = x/sqrt(ᾱ), σ = sqrt((1-ᾱ)/ᾱ), with both
    momentum and the second moment active."""
    abar, steps, lam_max, c, zeta = alphas_cumprod(cfg), 10, 0.3, 0.1, 1e-8
    model = GaussianOracle(abar)
    out = generate(model, cfg, "ams", steps=steps, n=2, seed=4, clip_sample=False,
                   lam_max=lam_max, c=c, zeta=zeta).double()

    x = initial_noise(2, (1, 16, 16), seed=4).double()
    m, v = None, torch.ones_like(x)
    ts = trailing(steps)
    lam = np.linspace(lam_max, 0.0, steps)
    for k, t in enumerate(ts):
        a = float(abar[t])
        a2 = float(abar[ts[k + 1]]) if k + 1 < steps else 1.0
        g = model(x.float(), torch.tensor(t)).sample.double()
        damping = math.sin(math.pi * lam[k] / 2)
        m = g if m is None else damping * m + (1 - damping) * g
        v = (1 - c) * v + c * g**2 / g.pow(2).mean(dim=(1, 2, 3), keepdim=True)
        dsigma = math.sqrt((1 - a2) / a2) - math.sqrt((1 - a) / a)
        x = math.sqrt(a2) * (x / math.sqrt(a) + dsigma * m / (v.sqrt() + zeta))
    torch.testing.assert_close(out, x.clamp(-1, 1), atol=2e-3, rtol=0)


@pytest.mark.parametrize("kw", [{}, {"lam_max": 0.3}, {"lam_max": -0.5}, {"base": "ddpm"},
                                {"eta": 1.0}])
def test_ams_keeps_the_spread_of_the_data(cfg, kw):
    """On data with a known exact ε (i.i.d. Gaussian pixels, std 0.3), AMS must draw samples
    as spread as its base does. The update with a² + b² = 1 counted every increment ~1.17
    times and shrank the spread to a third (grey squares on the embedded model)."""
    model = GaussianOracle(alphas_cumprod(cfg), mu=0.0, s=0.3)
    twin = "ddpm" if kw.get("base") == "ddpm" else "ddim"
    twin_kw = {"eta": kw["eta"]} if "eta" in kw else {}
    for steps in (10, 50):
        ams = generate(model, cfg, "ams", steps=steps, n=64, seed=3, clip_sample=False, **kw)
        base = generate(model, cfg, twin, steps=steps, n=64, seed=3, clip_sample=False,
                        **twin_kw)
        assert ams.std().item() == pytest.approx(base.std().item(), rel=0.08), steps
        assert ams.mean().item() == pytest.approx(0.0, abs=0.02)


# ------------------------------------------------------------------- interface

def test_registry_and_shared_settings(cfg):
    assert set(SAMPLERS) == {"ddpm", "ddim", "dpm-solver++", "ams"}
    for name in SAMPLERS:
        d = make_sampler(name, cfg).describe()
        assert d["sampler"] == name and d["timestep_spacing"] == "trailing"
        assert "clipped to [-1, 1]" in d["clipping"] and d["summary"]
        assert make_sampler(name, cfg, timestep_spacing="leading").describe()["timestep_spacing"] \
            == "leading"
    unclipped = make_sampler("dpm-solver++", cfg, clip_sample=False).describe()
    assert "not clipped" in unclipped["clipping"]
    assert make_sampler("ams", cfg, c=0.5).config["c"] == 0.5
    for name in SAMPLERS:  # the same timesteps for the same number of steps
        s = make_sampler(name, cfg)
        s.set_timesteps(20)
        assert s.timesteps.tolist() == trailing(20)


@pytest.mark.parametrize("kwargs, match", [
    ({"sampler": "euler"}, "unknown sampler"),
    ({"steps": 0}, "steps must be between 1 and 1000"),
    ({"steps": 1001}, "steps must be between 1 and 1000"),
    ({"steps": 2.5}, "steps must be an integer"),
    ({"n": 0}, "at least 1"),
    ({"sampler": "ddim", "eta": 2.0}, "eta"),
    ({"sampler": "ddim", "lam_max": 0.1}, "does not take lam_max"),
    ({"sampler": "ams", "base": "heun"}, "base"),
    ({"sampler": "ams", "c": 1.5}, "c must be"),
    ({"sampler": "ams", "c": -0.1}, "c must be between 0 and 1"),
    ({"sampler": "ams", "lam_max": -1.5}, "lam_max must be between -1 and 1"),
    ({"sampler": "ddpm", "timestep_spacing": "karras"}, "timestep_spacing"),
])
def test_bad_arguments_raise_litediff_error(tiny_unet, cfg, kwargs, match):
    with pytest.raises(LiteDiffError, match=match):
        generate(tiny_unet, cfg, **{"n": 1, **kwargs})


def test_progress_and_grid(tiny_unet, cfg):
    calls = []
    images = generate(tiny_unet, cfg, "ddim", steps=3, n=5, batch_size=2,
                      progress=lambda d, t, m: calls.append((d, t)))
    assert calls[-1] == (9, 9) and len(calls) == 9
    g = grid(images, nrow=3)
    assert g.mode == "L" and g.size == (3 * 18 + 2, 2 * 18 + 2)
    rgb = grid(torch.zeros(4, 3, 8, 8), nrow=2)
    assert rgb.mode == "RGB" and rgb.size == (2 * 10 + 2, 2 * 10 + 2)
    assert rgb.getpixel((5, 5)) == (128, 128, 128)

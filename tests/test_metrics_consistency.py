import copy
import math

import numpy as np
import pytest
import torch

from litediff_core.data.datasets import to_uint8
from litediff_core.errors import MetricError
from litediff_core.metrics import eps_mse_by_timestep, ssim_psnr


def _images(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    smooth = torch.nn.functional.avg_pool2d(torch.rand(n, 1, 32, 32, generator=g), 5, 1, 2)
    return smooth[:, :, 2:30, 2:30] * 2 - 1  # float in [-1, 1], 28×28


def test_identical_images():
    x = _images()
    r = ssim_psnr(x, x.clone())
    assert r["ssim_mean"] == pytest.approx(1.0, abs=1e-9)
    assert np.allclose(r["ssim"], 1.0) and r["ssim"].shape == (8,)
    assert math.isinf(r["psnr_mean"]) and np.isinf(r["psnr"]).all()  # not capped
    assert r["n"] == 8 and r["data_range"] == 1.0


def test_noise_lowers_ssim_and_psnr():
    x = _images()
    g = torch.Generator().manual_seed(1)
    results = [ssim_psnr(x, (x + s * torch.randn(x.shape, generator=g)).clamp(-1, 1))
               for s in (0.05, 0.2)]
    assert 1.0 > results[0]["ssim_mean"] > results[1]["ssim_mean"] > 0
    assert results[0]["psnr_mean"] > results[1]["psnr_mean"]
    # PSNR for data range 1 ([-1, 1] mapped to [0, 1]): 10·log10(1 / MSE)
    a, b = (x + 1) / 2, (x + 0.1 + 1) / 2
    expected = 10 * math.log10(1 / ((a - b.clamp(max=1)) ** 2).mean(dim=(1, 2, 3))[0].item())
    assert ssim_psnr(x, x + 0.1)["psnr"][0] == pytest.approx(expected, rel=1e-6)


def test_uint8_and_float_agree():
    x = _images()
    y = (x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(2))).clamp(-1, 1)
    as_float = ssim_psnr(x, y)
    as_uint8 = ssim_psnr(to_uint8(x), to_uint8(y))
    mixed = ssim_psnr(to_uint8(x), to_uint8(y).float() / 127.5 - 1)
    assert as_uint8["ssim_mean"] == pytest.approx(as_float["ssim_mean"], abs=0.01)
    assert mixed["ssim_mean"] == pytest.approx(as_uint8["ssim_mean"], abs=1e-6)  # float32 rounding


def test_ssim_errors():
    with pytest.raises(MetricError, match="shapes"):
        ssim_psnr(_images(), _images()[:, :, :20, :20])
    with pytest.raises(MetricError, match="11×11"):
        ssim_psnr(torch.zeros(2, 1, 8, 8), torch.zeros(2, 1, 8, 8))


def test_eps_mse_self_zero_other_positive(tiny_unet, ddpm_scheduler):
    data = to_uint8(_images(12)[:, :, :16, :16])
    tiny_unet.train()  # both models must be compared in eval mode
    same = eps_mse_by_timestep(tiny_unet, tiny_unet, data, ddpm_scheduler, n=20, buckets=4, batch_size=8)
    assert list(same.columns) == ["bucket", "t_lo", "t_hi", "n", "mse", "teacher_noise_mse",
                                  "student_noise_mse"]
    assert (same["mse"] == 0).all()
    assert same["n"].tolist() == [5, 5, 5, 5]
    assert same["t_lo"].tolist() == [0, 250, 500, 750] and same["t_hi"].tolist() == [249, 499, 749, 999]
    assert (same["teacher_noise_mse"] == same["student_noise_mse"]).all()
    assert tiny_unet.training

    other = copy.deepcopy(tiny_unet)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.01 * torch.randn_like(p))
    diff = eps_mse_by_timestep(tiny_unet, other, data, ddpm_scheduler, n=20, buckets=4, batch_size=8)
    assert (diff["mse"] > 0).all()
    again = eps_mse_by_timestep(tiny_unet, other, data, ddpm_scheduler, n=20, buckets=4, batch_size=20)
    assert np.allclose(again["mse"], diff["mse"], rtol=1e-4)  # same inputs whatever the batch size


def test_eps_mse_same_inputs_for_both_models(tiny_unet, ddpm_scheduler):
    """A student that is the teacher plus a constant: the mse is exactly that constant squared."""

    class Shifted(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x, t):
            return self.inner(x, t).sample + 0.5

    data = _images(6)[:, :, :16, :16]
    df = eps_mse_by_timestep(tiny_unet, Shifted(tiny_unet), data, ddpm_scheduler, n=10, buckets=2)
    assert np.allclose(df["mse"], 0.25, rtol=1e-5)


def test_eps_mse_errors(tiny_unet, ddpm_scheduler):
    with pytest.raises(MetricError):
        eps_mse_by_timestep(tiny_unet, tiny_unet, _images(4), ddpm_scheduler, n=4, buckets=10)

import json

import pytest
import torch
from safetensors.torch import load_file

from litediff_core.models import load_base
from litediff_core.train.base import TrainBaseConfig, train_base

pytestmark = pytest.mark.usefixtures("fashion_mnist")

TINY = dict(sample_size=28, in_channels=1, out_channels=1, layers_per_block=1,
            block_out_channels=(8, 16), down_block_types=("DownBlock2D", "AttnDownBlock2D"),
            up_block_types=("AttnUpBlock2D", "UpBlock2D"), attention_head_dim=8,
            norm_num_groups=4)


def _cfg(out, steps, **kw):
    return TrainBaseConfig(out=str(out), steps=steps, batch_size=16, lr=2e-3, warmup_steps=2,
                           checkpoint_every=3, unet_config=TINY, **kw)


def test_resumed_training_equals_uninterrupted(tmp_path):
    straight = train_base(_cfg(tmp_path / "a", 6))
    train_base(_cfg(tmp_path / "b", 3))          # stop after 3 steps ...
    resumed = train_base(_cfg(tmp_path / "b", 6))  # ... and continue to 6
    wa = load_file(str(straight / "unet" / "diffusion_pytorch_model.safetensors"))
    wb = load_file(str(resumed / "unet" / "diffusion_pytorch_model.safetensors"))
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    meta = json.loads((resumed / "litediff.json").read_text())
    assert meta["training"]["steps"] == 6 and meta["training"]["weights"] == "EMA"
    assert "--steps 6" in meta["training"]["command"]


def _eps_loss(unet, scheduler):
    from litediff_core.data import load_dataset

    g = torch.Generator().manual_seed(123)
    x0 = load_dataset("fashion-mnist", "test").batch(torch.arange(64))
    t = torch.randint(0, 1000, (64,), generator=g)
    noise = torch.randn(x0.shape, generator=g)
    with torch.no_grad():
        return torch.nn.functional.mse_loss(unet(scheduler.add_noise(x0, noise, t), t).sample,
                                            noise).item()


def test_training_lowers_the_loss_and_exports_a_loadable_model(tmp_path):
    from diffusers import UNet2DModel

    folder = train_base(_cfg(tmp_path / "c", 30))
    base = load_base(str(folder))
    assert base.meta.dataset == "fashion-mnist" and base.meta.resolution == 28
    torch.manual_seed(0)
    untrained = UNet2DModel(**TINY).eval()
    before, after = _eps_loss(untrained, base.scheduler), _eps_loss(base.unet, base.scheduler)
    assert after < 0.7 * before, (before, after)


def test_resume_with_other_seed_is_refused(tmp_path):
    train_base(_cfg(tmp_path / "d", 3))
    with pytest.raises(ValueError, match="another seed"):
        train_base(_cfg(tmp_path / "d", 6, seed=1))

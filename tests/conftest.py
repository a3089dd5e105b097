import os

import pytest
import torch

# Tests never touch the network: the hub is unreachable here and must be for users' tests too.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Every test gets its own litediff cache so cached statistics never leak between tests."""
    monkeypatch.setenv("LITEDIFF_CACHE", str(tmp_path / "cache"))


def _tiny(norm_num_groups: int):
    """A randomly initialised 1-channel 16×16 UNet2DModel of the embedded family (fast)."""
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    return UNet2DModel(sample_size=16, in_channels=1, out_channels=1, layers_per_block=1,
                       block_out_channels=(8, 16), down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D"), attention_head_dim=8,
                       norm_num_groups=norm_num_groups).eval()


@pytest.fixture
def tiny_unet():
    """The tiny UNet with 4 GroupNorm groups."""
    return _tiny(4)


@pytest.fixture
def two_group_unet():
    """tiny_unet with 2 GroupNorm groups: 4 channels per group, so it can be pruned twice."""
    return _tiny(2)


@pytest.fixture
def ddpm_scheduler():
    from diffusers import DDPMScheduler

    from litediff_core.models.embedded import ddpm_scheduler_config

    return DDPMScheduler(**ddpm_scheduler_config())

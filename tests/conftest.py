import os
from types import SimpleNamespace

import pytest
import torch

from litediff_core.data import local_folder

# Tests never touch the network: the hub is unreachable here and must be for users' tests too.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# no background imports in the test process: tests import diffusers in their own thread, and
# diffusers' lazy imports are not thread-safe (tests of the warm-up run Home in a subprocess)
os.environ.setdefault("LITEDIFF_WARM_UP_S", "off")

# Fashion-MNIST where the library finds it ($LITEDIFF_DATA, user cache, Debian's package), looked
# up before each test's empty cache (below) hides the user's, and passed on as LITEDIFF_DATA.
FASHION_MNIST = local_folder("fashion-mnist")
if FASHION_MNIST is not None:  # (found in $LITEDIFF_DATA: already set)
    os.environ.setdefault("LITEDIFF_DATA", str(FASHION_MNIST.parent))


@pytest.fixture(scope="session")
def fashion_mnist():
    """The local Fashion-MNIST folder; a test that needs it skips without it (fails under
    CI=true, where it must be installed: ./run tests does as root)."""
    if FASHION_MNIST is None:
        message = ("Fashion-MNIST not found (set LITEDIFF_DATA, or apt-get install "
                   "dataset-fashion-mnist)")
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return FASHION_MNIST


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


@pytest.fixture
def env(tmp_path, monkeypatch):
    """Empty stores for the dashboard: the user store and the repository's cached results both
    point to tmp."""
    cached, runs = tmp_path / "cached", tmp_path / "runs"
    cached.mkdir()
    monkeypatch.setenv("LITEDIFF_CACHED_RESULTS", str(cached))
    monkeypatch.setenv("LITEDIFF_RUNS", str(runs))
    return SimpleNamespace(cached=cached, runs=runs)

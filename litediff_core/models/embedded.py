"""The embedded default: architectures of the small models shipped inside the package.

``fashion-mnist-ddpm`` uses the block types of google/ddpm-cifar10-32 (ResNet blocks with a
time embedding, one attention level, DDPM linear β schedule over 1000 steps), scaled down to
~0.29 GMACs per 28×28 image so that CPU sampling is interactive.
"""

from __future__ import annotations

from pathlib import Path

EMBEDDED_DIR = Path(__file__).resolve().parent.parent / "embedded"

# Registry: embedded name -> (folder, short description)
EMBEDDED = {
    "fashion-mnist-ddpm": "28×28 Fashion-MNIST DDPM, 2.7 M params, trained by `litediff train-base`",
}
DEFAULT_EMBEDDED = "fashion-mnist-ddpm"
CLASSIFIER_NAME = "fashion-mnist-classifier"


def embedded_path(name: str) -> Path:
    return EMBEDDED_DIR / name


def fashion_unet_config() -> dict:
    """UNet2DModel keyword arguments of the embedded Fashion-MNIST DDPM."""
    return dict(
        sample_size=28,
        in_channels=1,
        out_channels=1,
        layers_per_block=1,
        block_out_channels=(32, 64, 128),
        down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        attention_head_dim=32,
        norm_num_groups=8,
        dropout=0.0,
    )


def ddpm_scheduler_config() -> dict:
    """The DDPM noise schedule of the seed papers (linear β from 1e-4 to 0.02, 1000 steps)."""
    return dict(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02,
                beta_schedule="linear", clip_sample=True, prediction_type="epsilon",
                variance_type="fixed_small")


def cifar10_ddpm_config() -> dict:
    """The exact UNet2DModel config of google/ddpm-cifar10-32 (35,746,307 parameters)."""
    return dict(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        layers_per_block=2,
        block_out_channels=(128, 256, 256, 256),
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        dropout=0.1,
        resnet_time_scale_shift="default",
        flip_sin_to_cos=False,
        freq_shift=1,
        norm_num_groups=32,
        attention_head_dim=None,
        act_fn="silu",
        center_input_sample=False,
        downsample_padding=0,
        norm_eps=1e-6,
        time_embedding_type="positional",
    )

"""The tiny 28×28 one-channel UNet that the store, page, Explore and browser tests share: the
embedded model's shape (so Fashion-MNIST evaluations apply) at a fraction of its cost."""

TINY28 = dict(sample_size=28, in_channels=1, out_channels=1, layers_per_block=1,
              block_out_channels=(16, 32), down_block_types=("DownBlock2D", "AttnDownBlock2D"),
              up_block_types=("AttnUpBlock2D", "UpBlock2D"), attention_head_dim=8,
              norm_num_groups=4)


def save_tiny_base(folder, seed: int = 0) -> str:
    """An untrained tiny base (weights from ``seed``), saved as a diffusers folder with the
    embedded model's DDPM schedule and labelled Fashion-MNIST; its path."""
    import torch
    from diffusers import DDPMScheduler, UNet2DModel

    from litediff_core.models import save_model
    from litediff_core.models.embedded import ddpm_scheduler_config

    torch.manual_seed(seed)
    return str(save_model(UNet2DModel(**TINY28).eval(), DDPMScheduler(**ddpm_scheduler_config()),
                          folder, {"dataset": "fashion-mnist"}))

"""Data-parallel fine-tuning of the tiny UNet, run by ``test_compress_train_dp.py``.

Launched on CPU with two processes::

    ACCELERATE_USE_CPU=1 python -m accelerate.commands.launch --multi_gpu --num_processes 2 \
        tests/dp_finetune.py OUT

(``--multi_gpu`` is the launcher that spawns processes (torchrun); ``ACCELERATE_USE_CPU=1``,
what ``--cpu`` sets, makes them use gloo on the CPU. ``--cpu --num_processes 2`` alone goes to
Accelerate's simple launcher, which starts one non-distributed process unless mpirun is used.)

Every process runs :func:`run` (unstructured pruning, then FineTune with L1, EMA and
regrowth every 2 steps, then Distill with KD) and writes ``OUT/rank<i>.safetensors`` (the
final weights, masks folded, plus the masks) and ``OUT/rank<i>.json`` (loss histories, process
count, images per student forward pass). The test imports :func:`run` to make the
single-process reference.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

BATCH = 9  # odd: the two shards hold 5 and 4 images


def tiny_unet():
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    return UNet2DModel(sample_size=16, in_channels=1, out_channels=1, layers_per_block=1,
                       block_out_channels=(8, 16),
                       down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D"), attention_head_dim=8,
                       norm_num_groups=4).eval()


def smooth_images(n=64, size=16, seed=0):
    """n smooth 1×size×size images in [-1, 1] (products of random sinusoids)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size),
                            indexing="ij")
    fx, fy = torch.rand(n, 1, 1, 1, generator=g) * 3, torch.rand(n, 1, 1, 1, generator=g) * 3
    phase = torch.rand(n, 1, 1, 1, generator=g) * 6.3
    return (torch.sin(fx * xx + phase) * torch.cos(fy * yy) * 0.9).contiguous()


def run():
    """(final state dict with masks folded, masks, loss histories, processes, the number of
    images of every student forward pass)."""
    from diffusers import DDPMScheduler

    from litediff_core.compress import (CompressState, Distill, FineTune, UnstructuredPrune,
                                        make_permanent, masks)
    from litediff_core.compress.base import clone_model
    from litediff_core.models.embedded import ddpm_scheduler_config

    state = CompressState.start(tiny_unet(), DDPMScheduler(**ddpm_scheduler_config()),
                                data=smooth_images())
    seen = []  # a forward pre-hook survives the stages' deep copies (the list is shared)
    state.unet.register_forward_pre_hook(lambda module, args: seen.append(int(args[0].shape[0])))
    UnstructuredPrune(ratio=0.4).apply(state)
    FineTune(steps=4, batch_size=BATCH, lr=1e-3, l1_lambda=1e-4, ema=True, regrowth=0.3,
             regrowth_every=2).apply(state)
    Distill(steps=3, batch_size=BATCH, lr=1e-3, kd_frac=0.7).apply(state)
    found = masks(state.unet)
    weights = make_permanent(clone_model(state.unet)).state_dict()
    losses = {entry["stage"]: entry["losses"] for entry in state.log if "losses" in entry}
    return ({k: v.detach().clone().contiguous() for k, v in weights.items()}, found, losses,
            state.log[-1]["processes"], seen)


def main(out: str) -> None:
    from accelerate import Accelerator
    from safetensors.torch import save_file

    # Accelerator, not PartialState: only AcceleratorState reads ACCELERATE_USE_CPU
    rank = Accelerator().process_index
    weights, found, losses, processes, seen = run()
    out = Path(out)
    tensors = {**weights, **{f"mask::{k}": v.to(torch.uint8) for k, v in found.items()}}
    save_file(tensors, str(out / f"rank{rank}.safetensors"))
    (out / f"rank{rank}.json").write_text(json.dumps({"losses": losses, "processes": processes,
                                                      "batch_sizes": seen}))


if __name__ == "__main__":
    main(sys.argv[1])

"""Train a base DDPM (the embedded default) with EMA, resumable, bit-for-bit reproducible.

Every step draws its batch indices, timesteps and noise from a generator seeded by
(seed, step), so a run resumed from a checkpoint takes exactly the steps an uninterrupted run
would. The learning rate warms up linearly and then stays constant, so stopping at step N gives
the same model as ``--steps N``. Every ``checkpoint_every`` steps the EMA weights are exported
as a diffusers DDPMPipeline folder (``<out>/model``) next to a resumable checkpoint.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F

from ..data import load_dataset
from ..progress import Event, Progress, report
from .checkpoint import load_checkpoint, save_checkpoint


@dataclass
class TrainBaseConfig:
    out: str = "runs/train-base"
    dataset: str = "fashion-mnist"
    architecture: str = "fashion-mnist-ddpm"
    steps: int = 4000
    batch_size: int = 128
    lr: float = 1e-3
    warmup_steps: int = 200
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_max_decay: float = 0.999
    seed: int = 0
    checkpoint_every: int = 250
    threads: Optional[int] = None
    unet_config: Optional[dict] = None   # overrides the architecture (tests use a tiny one)


def hardware() -> dict:
    return {"machine": platform.machine(), "processor": platform.processor() or "unknown",
            "cpu_count": __import__("os").cpu_count(), "torch_threads": torch.get_num_threads(),
            "device": "cpu", "torch": torch.__version__}


def _architecture(cfg: TrainBaseConfig):
    from diffusers import DDPMScheduler, UNet2DModel

    from ..models.embedded import ddpm_scheduler_config, fashion_unet_config

    if cfg.unet_config is None and cfg.architecture != "fashion-mnist-ddpm":
        raise ValueError(f"unknown architecture {cfg.architecture!r}")
    unet = UNet2DModel(**(cfg.unet_config or fashion_unet_config()))
    return unet, DDPMScheduler(**ddpm_scheduler_config())


def train_base(cfg: TrainBaseConfig, progress: Optional[Progress] = None) -> Path:
    """Train (or resume) and return the exported model folder."""
    from diffusers.training_utils import EMAModel

    from ..models.io import save_model

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_dataset(cfg.dataset, "train")
    torch.manual_seed(cfg.seed)
    unet, scheduler = _architecture(cfg)
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    ema = EMAModel(unet.parameters(), decay=cfg.ema_max_decay)
    ckpt = out / "checkpoint"
    step, seconds = 0, 0.0
    if (ckpt / "state.json").exists():
        state = load_checkpoint(ckpt, unet, opt, ema.shadow_params)
        if state["config"]["seed"] != cfg.seed or state["config"]["batch_size"] != cfg.batch_size:
            raise ValueError(f"{ckpt} was made with another seed/batch size; use a new --out")
        step, seconds = state["step"], state["train_seconds"]
        ema.optimization_step = step
    log = (out / "train_log.jsonl").open("a")
    T = scheduler.config.num_train_timesteps
    unet.train()
    loss_avg = None
    t_start = time.time() - seconds
    while step < cfg.steps:
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        idx = torch.randint(0, len(data), (cfg.batch_size,), generator=g)
        x0 = data.batch(idx)
        t = torch.randint(0, T, (cfg.batch_size,), generator=g)
        noise = torch.randn(x0.shape, generator=g)
        xt = scheduler.add_noise(x0, noise, t)
        lr = cfg.lr * min(1.0, (step + 1) / max(1, cfg.warmup_steps))
        for group in opt.param_groups:
            group["lr"] = lr
        loss = F.mse_loss(unet(xt, t).sample, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), cfg.grad_clip)
        opt.step()
        ema.step(unet.parameters())
        step += 1
        loss_avg = loss.item() if loss_avg is None else 0.98 * loss_avg + 0.02 * loss.item()
        if step % 50 == 0 or step == cfg.steps:
            log.write(json.dumps({"step": step, "loss": loss.item(), "loss_avg": loss_avg,
                                  "lr": lr, "seconds": time.time() - t_start}) + "\n")
            log.flush()
        report(progress, step, cfg.steps, Event(f"loss {loss_avg:.4f}", loss=loss_avg, step=step))
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            seconds = time.time() - t_start
            state = {"step": step, "train_seconds": seconds, "config": asdict(cfg)}
            save_checkpoint(ckpt, unet, opt, state, ema.shadow_params)
            _export(unet, ema, scheduler, out / "model", cfg, step, seconds, data, save_model)
    log.close()
    return out / "model"


def _export(unet, ema, scheduler, folder: Path, cfg: TrainBaseConfig, step: int,
            seconds: float, data, save_model) -> None:
    import copy

    ema_unet = copy.deepcopy(unet)
    ema.copy_to(ema_unet.parameters())
    ema_unet.eval()
    meta = {
        "name": "LiteDiff embedded Fashion-MNIST DDPM",
        "description": "A small DDPM built from the block types of google/ddpm-cifar10-32 "
                       "(ResNet blocks with time embedding, attention at the lowest level), "
                       "trained on Fashion-MNIST; small enough to sample on a laptop CPU.",
        "dataset": cfg.dataset,
        "resolution": data.resolution,
        "channels": data.channels,
        "classes": data.classes,
        "training": {"command": f"litediff train-base --out {cfg.out} --steps {step} "
                               f"--batch-size {cfg.batch_size} --lr {cfg.lr} --seed {cfg.seed}",
                     "steps": step, "seconds": round(seconds, 1), "config": asdict(cfg),
                     "weights": "EMA", "data_source": data.source, "hardware": hardware()},
    }
    save_model(ema_unet, scheduler, folder, meta)

"""Helpers shared by the compression stages: protected module sets, the images that
data-driven stages learn from, and the DDPM noise-prediction loss and its gradients."""

from __future__ import annotations

from typing import Callable, List, Optional

from .._lazy import F, nn, torch
from ..errors import LiteDiffError
from ..progress import Progress, report

# Module sets a stage can leave untouched (option ``protect``).
PROTECT_SETS = ("time_embedding", "attention", "first_last_conv")


def protected_modules(unet: nn.Module, protect) -> List[nn.Module]:
    """The modules of ``unet`` named by the protect sets (their submodules are protected too):
    time_embedding = the timestep MLP (``time_embedding``, plus ``class_embedding`` if any),
    attention = every diffusers ``Attention``, first_last_conv = ``conv_in`` and ``conv_out``."""
    from diffusers.models.attention_processor import Attention

    out: List[nn.Module] = []
    if "time_embedding" in protect:
        out += [m for m in (getattr(unet, "time_embedding", None),
                            getattr(unet, "class_embedding", None)) if isinstance(m, nn.Module)]
    if "attention" in protect:
        out += [m for m in unet.modules() if isinstance(m, Attention)]
    if "first_last_conv" in protect:
        out += [unet.conv_in, unet.conv_out]
    return out


def all_submodules(modules) -> set:
    return {sub for m in modules for sub in m.modules()}


ImageSampler = Callable[[int, "torch.Generator"], "torch.Tensor"]


def image_sampler(data, unet: nn.Module, who: str) -> ImageSampler:
    """``draw(n, generator)``: n float images in [-1, 1] (distinct while the data has n images)
    from an :class:`~litediff_core.data.ImageDataset` or an N×C×H×W float tensor, checked
    against the UNet's channels and resolution."""
    from ..data import ImageDataset

    if data is None:
        raise LiteDiffError(f"{who} needs training images: pass data (a dataset or an N×C×H×W "
                            f"float tensor in [-1, 1])")
    if isinstance(data, ImageDataset):
        count, shape, take = len(data), tuple(data.uint8.shape[1:]), data.batch
    elif isinstance(data, torch.Tensor):
        if not data.is_floating_point() or data.ndim != 4:
            raise LiteDiffError(f"{who}: data must be a float N×C×H×W tensor in [-1, 1], "
                                f"got {data.dtype} {tuple(data.shape)}")
        if data.numel() and (data.min() < -1.001 or data.max() > 1.001):
            raise LiteDiffError(f"{who}: data values must lie in [-1, 1] (got "
                                f"{float(data.min()):.3g} to {float(data.max()):.3g})")
        count, shape, take = data.shape[0], tuple(data.shape[1:]), lambda idx: data[idx].float()
    else:
        raise LiteDiffError(f"{who}: data must be an ImageDataset or a tensor, "
                            f"not {type(data).__name__}")
    size = unet.config.sample_size
    expected = (int(unet.config.in_channels),) + ((size, size) if isinstance(size, int)
                                                  else tuple(size))
    if shape != expected:
        raise LiteDiffError(f"{who}: data images are {'×'.join(map(str, shape))} but the model "
                            f"takes {'×'.join(map(str, expected))}")
    if count == 0:
        raise LiteDiffError(f"{who}: data holds no images")

    def draw(n: int, generator: torch.Generator) -> torch.Tensor:
        idx = (torch.randperm(count, generator=generator)[:n] if n <= count
               else torch.randint(count, (n,), generator=generator))
        return take(idx)

    return draw


def loss_target(scheduler, x0: torch.Tensor, noise: torch.Tensor,
                t: torch.Tensor) -> torch.Tensor:
    """What the UNet is trained to output at timesteps ``t``, by the scheduler's
    ``prediction_type``: the noise (ε), the velocity (v) or the clean image (sample)."""
    kind = scheduler.config.get("prediction_type", "epsilon")
    if kind == "v_prediction":
        return scheduler.get_velocity(x0, noise, t)
    return x0 if kind == "sample" else noise


def noise_prediction_loss(unet, scheduler, x0: torch.Tensor, t: torch.Tensor,
                          noise: torch.Tensor) -> torch.Tensor:
    """The DDPM training loss at timesteps ``t``: MSE between the UNet output and its
    :func:`loss_target`."""
    device = next(unet.parameters()).device
    x0, t, noise = x0.to(device), t.to(device), noise.to(device)
    return F.mse_loss(unet(scheduler.add_noise(x0, noise, t), t).sample,
                      loss_target(scheduler, x0, noise, t))


def accumulate_gradients(unet, scheduler, draw: ImageSampler, batches: int, batch_size: int,
                         generator: torch.Generator, progress: Optional[Progress] = None,
                         who: str = "") -> List[float]:
    """Leave in ``.grad`` the gradient of the mean noise-prediction loss over ``batches``
    batches of ``batch_size`` images, each image at a uniformly random timestep with fresh
    noise (eval mode: no dropout). Returns the loss of each batch."""
    steps = int(scheduler.config.num_train_timesteps)
    unet.zero_grad(set_to_none=True)
    losses = []
    with torch.enable_grad():
        for b in range(batches):
            x0 = draw(batch_size, generator)
            t = torch.randint(steps, (x0.shape[0],), generator=generator)
            noise = torch.randn(x0.shape, generator=generator)
            loss = noise_prediction_loss(unet, scheduler, x0, t, noise)
            (loss / batches).backward()
            losses.append(float(loss.detach()))
            report(progress, b + 1, batches, f"{who}: gradients, batch {b + 1}/{batches}")
    return losses


class eval_mode:
    """Context manager: the module in eval mode inside, its previous mode restored after."""

    def __init__(self, module: nn.Module):
        self.module, self.was_training = module, module.training

    def __enter__(self):
        self.module.eval()
        return self.module

    def __exit__(self, *exc):
        self.module.train(self.was_training)
        return False

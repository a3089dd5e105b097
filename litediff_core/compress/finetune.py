"""Fine-tuning: recover the quality a compressed UNet lost, with the plain DDPM loss.

The noise-prediction MSE on the state's images (shared loop: Adam, cosine annealing with warm
restarts of period ``T_0``, optional EMA; Accelerate data parallel, see ``_training.py``), plus
the options of "Towards Tiny Diffusion":

- ``l1_lambda``: λ·Σ|w| over every Conv2d / Linear weight (masks applied) is added to the loss,
  a sum and not a mean, so useful values are small (≈1e-6 – 1e-5 for a model of a few million
  weights); it pushes weights towards zero (sparser, more compressible).
- ``regrowth``: masks from unstructured pruning persist through fine-tuning (a masked weight
  stays exactly 0: its ``weight_orig`` gets no gradient); with ``regrowth`` = p > 0 each masked
  weight is unmasked independently with probability p (a Bernoulli draw seeded by seed and
  step, the same on every process), once after the last step (``regrowth_every`` = 0, the
  default) or after every k-th step (``regrowth_every`` = k, steps k, 2k, … < steps; regrown
  weights then train on). Masks are updated with ``apply_masks(..., replace=True)``: a regrown
  weight comes back with its ``weight_orig`` value, which masked training never changed — its
  value from before pruning. Expected sparsity after n events: s·(1 − p)^n.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .._lazy import size, torch
from ..errors import LiteDiffError
from ..progress import Progress
from ._training import (TrainingOptions, TrainingStage, l1_penalty,
                        loop_options, recovery_kwargs, sparsity, train_noise_prediction,
                        training_data, training_entry)
from ._io_hooks import require_torch_weights
from .base import CompressState, clone_model, option
from .unstructured import apply_masks, masks


class FineTune(TrainingStage):
    """Fine-tune the current UNet on its dataset; see the module docstring."""

    name = "finetune"
    family = "finetune"
    headline = ("steps",)

    @dataclass
    class Config(TrainingOptions):
        l1_lambda: float = option(0.0, "weight of the L1 penalty λ·Σ|w| (Towards Tiny Diffusion)",
                                 low=0.0)
        regrowth: float = option(0.0, "probability that each pruned (masked) weight regrows",
                                low=0.0, high=1.0, widget="slider")
        regrowth_every: int = option(0, "regrow every this many steps (0: once, at the end)", low=0)
        seed: int = option(0, "seed of images, timesteps, noise and regrowth draws")

    def check(self) -> None:
        super().check()
        c = self.config
        if c.l1_lambda < 0:
            raise LiteDiffError(f"{self.name}: l1_lambda must be ≥ 0, not {c.l1_lambda}")
        if not 0.0 <= c.regrowth <= 1.0:
            raise LiteDiffError(f"{self.name}: regrowth must be in [0, 1], not {c.regrowth}")
        if c.regrowth_every < 0:
            raise LiteDiffError(f"{self.name}: regrowth_every must be ≥ 0")

    def transform(self, state: CompressState, progress: Optional[Progress] = None, data=None):
        """Fine-tune a copy of ``state.unet``. ``data`` (else ``state.data``, else the state's
        dataset) gives the images."""
        c = self.config
        require_torch_weights(state.unet, self.name)
        data = training_data(state, data, self.name)
        unet = clone_model(state.unet)
        sparsity_before = sparsity(unet)
        regrown = {"events": 0, "weights": 0}

        def regrow(step: int, model) -> None:
            found = masks(model)
            if not found or c.regrowth <= 0:
                return
            g = torch.Generator().manual_seed(c.seed * 1_000_003 + 500_009 + step)
            new = {}
            for key in sorted(found):
                kept = found[key]
                grow = torch.rand(kept.shape, generator=g) < c.regrowth
                regrown["weights"] += int((grow & ~kept).sum())
                new[key] = kept | grow
            apply_masks(model, new, replace=True)
            regrown["events"] += 1

        every = c.regrowth_every if c.regrowth > 0 and c.regrowth_every > 0 else 0
        recovery = recovery_kwargs(self, state)

        def on_step(step: int, model) -> None:
            if step % every == 0 and step < c.steps:
                regrow(step, model)

        result = train_noise_prediction(
            unet, state.scheduler, data, **loop_options(c),
            penalty=l1_penalty(c.l1_lambda) if c.l1_lambda > 0 else None,
            on_step=on_step if every else None, extra_state=regrown,
            progress=progress, who=self.name, **recovery)
        if c.regrowth > 0 and not every:
            regrow(c.steps, unet)
        entry = {**training_entry(self, result, recovery), "nonzero_params": size.count_nonzero(unet)}
        if sparsity_before is not None:
            entry.update(sparsity_before=sparsity_before, sparsity_after=sparsity(unet),
                         regrowth_events=regrown["events"], regrown_weights=regrown["weights"])
        if c.regrowth > 0 and sparsity_before is None:
            state.note("finetune: regrowth was asked for but the model has no pruning masks "
                       "(nothing to regrow)")
        return unet, entry


"""LoRA recovery fine-tuning: train small low-rank adapters, then merge them into the weights.

peft LoRA adapters (``LoraConfig`` + ``inject_adapter_in_model``) are put on the UNet's Conv2d
and/or Linear layers (option ``layers``; ``protect`` leaves module sets alone): a layer W
becomes W + (alpha / r) · B·A, with A (rank r, same kernel as W for a conv) randomly
initialised (seeded) and B = 0, so training starts from the unchanged model. Only the adapters
train (every other parameter is frozen), with the shared loop of ``_training.py`` (Adam,
cosine warm restarts, optional EMA, Accelerate data parallel), on the DDPM loss, optionally
mixed with knowledge distillation from ``state.teacher`` (``kd_frac``, as in ``distill``).

The adapters are then MERGED (W ← W + (alpha / r) · B·A) and removed, so the result is a plain
UNet with the same parameter names and shapes as before: after merging LoRA adds no parameters
and no inference cost, and the model saves and loads like any other. LoRA here is a cheap way
to *recover* quality (few trainable parameters, little optimizer memory); it does not make the
model smaller — that is low-rank *factorisation*, a different stage, which replaces a layer by
two thinner ones.

Sparse models: on a layer under an unstructured-pruning mask the merge adds the update to
``weight_orig`` and the mask stays, so pruned weights stay exactly 0 — but the adapter's update
at pruned positions is dropped, so the merged model differs slightly from the trained
model-with-adapters (the state gets a note). Fine-tune sparse models with ``finetune`` for an
exact result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

from .._lazy import nn, no_grad, size, torch
from ..errors import LiteDiffError
from ..progress import Progress
from ._common import PROTECT_SETS, all_submodules, protected_modules
from ._training import (TrainingOptions, TrainingStage, kd_loss,
                        loop_options, recovery_kwargs, refresh_masked_weights,
                        train_noise_prediction, training_data, training_entry)
from ._io_hooks import require_torch_weights
from .base import CompressState, clone_model, option

LAYER_KINDS = {"conv": "Conv2d", "linear": "Linear"}   # option value → torch.nn class name
ADAPTER = "litediff"
SPARSE_NOTE = ("lora: on masked (sparse) layers the adapters' update at pruned positions is "
               "dropped when merging, so the merged model only approximates the trained one")


class LoRA(TrainingStage):
    """Train LoRA adapters and merge them back; see the module docstring."""

    name = "lora"
    family = "lora"
    headline = ("steps",)

    @dataclass
    class Config(TrainingOptions):
        lr: float = option(1e-3, "peak learning rate (Adam) of the adapters", low=0.0,
                           open_low=True)
        ema: bool = option(False, "end with the exponential moving average of the adapters")
        seed: int = option(0, "seed of the adapters' initialisation, images, timesteps, noise")
        r: int = option(4, "adapter rank", low=1)
        alpha: float = option(4.0, "adapter scale numerator: the update is (alpha / r) · B·A",
                              low=0.0, open_low=True)
        layers: Tuple[str, ...] = option(("conv", "linear"), "layer kinds that get adapters",
                                         tuple(LAYER_KINDS))
        protect: Tuple[str, ...] = option((), "modules left without adapters", PROTECT_SETS)
        kd_frac: float = option(0.0, "weight of distillation from the teacher (0: none)",
                                low=0.0, high=1.0, widget="slider")

    def check(self) -> None:
        super().check()
        c = self.config
        if not c.layers:
            raise LiteDiffError(f"{self.name}: choose at least one layer kind (conv, linear)")

    def transform(self, state: CompressState, progress: Optional[Progress] = None, data=None):
        """Train adapters on a copy of ``state.unet`` and merge them into its weights."""
        c = self.config
        if c.kd_frac > 0 and state.teacher is None:
            raise LiteDiffError(f"{self.name}: kd_frac > 0 needs the state's teacher")
        require_torch_weights(state.unet, self.name)
        data = training_data(state, data, self.name)
        unet = clone_model(state.unet)
        info = add_adapters(unet, c.r, c.alpha, c.layers, c.protect, c.seed)
        recovery = recovery_kwargs(self, state)
        try:
            result = train_noise_prediction(
                unet, state.scheduler, data, **loop_options(c), task_weight=1.0 - c.kd_frac,
                extra_loss=kd_loss(state.teacher, c.kd_frac) if c.kd_frac > 0 else None,
                progress=progress, who=self.name, **recovery)
        finally:
            merged = merge_adapters(unet)
        if merged["masked_layers"]:
            state.note(SPARSE_NOTE)
        state.note("lora: adapters are merged into the weights — no extra parameters or "
                   "inference cost, and no size reduction (low-rank factorisation is another "
                   "stage)")
        return unet, {**training_entry(self, result, recovery), **info,
                      "merged_layers": merged["layers"], "params": size.count_params(unet)}


def lora_targets(unet: nn.Module, layers=("conv", "linear"), protect=()) -> list:
    """Names of the layers that get adapters: the chosen kinds, outside the protected sets."""
    kinds = tuple(getattr(nn, LAYER_KINDS[k]) for k in layers)
    protected = all_submodules(protected_modules(unet, protect))
    return [n for n, m in unet.named_modules()
            if type(m) in kinds and m not in protected]  # exact types: what peft wraps


def add_adapters(unet: nn.Module, r: int, alpha: float, layers=("conv", "linear"),
                 protect=(), seed: int = 0) -> dict:
    """Inject LoRA adapters into ``unet`` in place (peft; adapter A seeded, B = 0) and freeze
    every other parameter. Returns log info (adapter and total parameter counts)."""
    from peft import LoraConfig, inject_adapter_in_model

    targets = lora_targets(unet, layers, protect)
    if not targets:
        raise LiteDiffError("lora: no layer to put adapters on (all protected?)")
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, bias="none",
                        target_modules=targets, init_lora_weights=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        inject_adapter_in_model(config, unet, adapter_name=ADAPTER)
    trainable = 0
    for n, p in unet.named_parameters():
        p.requires_grad = ".lora_" in n
        trainable += p.numel() if p.requires_grad else 0
    return {"adapter_layers": len(targets), "adapter_params": trainable,
            "base_params": size.count_params(unet) - trainable}


@no_grad
def merge_adapters(unet: nn.Module) -> dict:
    """Merge every peft LoRA layer of ``unet`` into its base layer and put the base layer back
    (in place): a plain model with the original parameter names and shapes, every parameter
    trainable again. Masked base layers get the update in ``weight_orig`` (mask kept)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    merged = masked = 0
    tuners = [(n, m) for n, m in unet.named_modules() if isinstance(m, BaseTunerLayer)]
    for name, layer in tuners:
        base = layer.get_base_layer()
        if hasattr(base, "weight_orig") and hasattr(base, "weight_mask"):
            for adapter in layer.active_adapters:
                if adapter in layer.lora_A:
                    delta = layer.get_delta_weight(adapter)
                    base.weight_orig.add_(delta.to(base.weight_orig.dtype))
            masked += 1
        else:
            layer.merge(safe_merge=True)
        parent_name, _, child = name.rpartition(".")
        parent = unet.get_submodule(parent_name) if parent_name else unet
        setattr(parent, child, base)
        merged += 1
    if hasattr(unet, "peft_config"):
        del unet.peft_config
    for p in unet.parameters():
        p.requires_grad = True
    refresh_masked_weights(unet)
    return {"layers": merged, "masked_layers": masked}

"""Simulated ("fake") quantization of weights and activations at chosen bit widths, with
timestep-aware calibration (Q-Diffusion / PTQ4DM).

Simulated: no speed or memory gain. Every number stays an fp32 tensor; the stage only rounds
values to the grid a real W\\ *b*\\ A\\ *b* integer kernel would see, so students can compare the
*quality* of W8A8, W4A8, W8A16, ... before (or without) a real int8 runtime.

- Weights of every Conv2d / Linear outside ``protect`` are quantized once, in place:
  symmetric, per output channel (``per_channel``) or per tensor, ``weight_bits`` bits, scales
  from torch's ``PerChannelMinMaxObserver`` / ``MinMaxObserver`` and rounding by
  ``torch.fake_quantize_per_channel_affine`` / ``..._per_tensor_affine``. The state dict keeps
  plain fp32 weights, now on the integer grid.
- The input of each such layer is fake-quantized at ``act_bits`` bits (0 = left in fp32) by a
  forward pre-hook calling ``torch.fake_quantize_per_tensor_affine`` (straight-through gradient,
  so a later fine-tune works through it): one per-tensor range per layer, affine
  (``act_symmetric=False``) or symmetric, from calibration.
- Calibration (timestep-aware): the fp32 model samples ``calib_images`` images with
  ``calib_sampler`` in ``calib_steps`` steps from fixed noise, and the UNet input at every
  ``calib_every``-th step is kept (:mod:`._calibration`); the layer inputs seen on those batches
  give each range: ``minmax`` (torch ``MinMaxObserver`` over all batches) or ``percentile``
  (the mean over batches of the lower/upper ``percentile`` of the layer input).

``state.log`` gets the calibration timesteps and the relative error
‖ε_quant − ε_fp32‖ / ‖ε_fp32‖ of the noise prediction over the calibration batches.
Saving (IO hook): the weights are saved as they are (already on the grid); the activation
ranges go to ``pruning_history.json`` and the hooks are re-attached on loading.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from .._lazy import nn, no_grad, torch
from ..errors import LiteDiffError
from ..progress import Progress, report
from ..recipes import SAMPLER_NAMES
from ._calibration import CalibrationBatch, calibration_inputs
from ._common import PROTECT_SETS, all_submodules, protected_modules
from ._io_hooks import IOHook, register_io_hook, require_torch_weights
from .base import CompressState, Stage, clone_model, option
from .unstructured import make_permanent

NOTE = ("simulated: no speed or memory gain (fake {} quantization: fp32 values rounded to the "
        "integer grid, to show the quality a real integer kernel would give)")
ACT_RANGES = ("minmax", "percentile")
_PERCENTILE_VALUES = 1 << 20  # values drawn per batch for a percentile (torch.quantile: < 2^24)


def _observer_dtype(bits: int, signed: bool) -> torch.dtype:
    if bits <= 8:
        return torch.qint8 if signed else torch.quint8
    return torch.qint32  # observers refuse ranges wider than their dtype


def quant_range(bits: int, signed: bool, symmetric: bool) -> Tuple[int, int]:
    """(quant_min, quant_max): ±(2^(b−1) − 1) for symmetric weights (restricted, zero exact),
    −2^(b−1)..2^(b−1)−1 for signed activations, 0..2^b − 1 for unsigned ones."""
    if symmetric and signed:
        return -(2 ** (bits - 1)) + 1, 2 ** (bits - 1) - 1
    if signed:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2 ** bits - 1


@no_grad
def fake_quantize_weight(weight: torch.Tensor, bits: int, per_channel: bool = True) -> torch.Tensor:
    """``weight`` rounded to a symmetric ``bits``-bit grid (per output channel or per tensor)."""
    from torch.ao.quantization.observer import MinMaxObserver, PerChannelMinMaxObserver

    qmin, qmax = quant_range(bits, signed=True, symmetric=True)
    w = weight.detach().float()
    kw = {"dtype": _observer_dtype(bits, True), "quant_min": qmin, "quant_max": qmax}
    if per_channel:
        obs = PerChannelMinMaxObserver(ch_axis=0, qscheme=torch.per_channel_symmetric, **kw)
        obs(w)
        scale, zero = obs.calculate_qparams()
        out = torch.fake_quantize_per_channel_affine(w, scale.float(), zero.int(), 0, qmin, qmax)
    else:
        obs = MinMaxObserver(qscheme=torch.per_tensor_symmetric, **kw)
        obs(w)
        scale, zero = obs.calculate_qparams()
        out = torch.fake_quantize_per_tensor_affine(w, float(scale), int(zero), qmin, qmax)
    return out.to(weight.dtype)


class ActFakeQuant:
    """Forward pre-hook: the layer's first input fake-quantized per tensor."""

    def __init__(self, scale: float, zero_point: int, quant_min: int, quant_max: int,
                 bits: int):
        self.scale, self.zero_point = float(scale), int(zero_point)
        self.quant_min, self.quant_max, self.bits = int(quant_min), int(quant_max), int(bits)

    def __call__(self, module, args):
        x = args[0]
        q = torch.fake_quantize_per_tensor_affine(x.float(), self.scale, self.zero_point,
                                                  self.quant_min, self.quant_max)
        return (q.to(x.dtype), *args[1:])

    def to_dict(self) -> dict:
        return {"scale": self.scale, "zero_point": self.zero_point,
                "quant_min": self.quant_min, "quant_max": self.quant_max, "bits": self.bits}

    @classmethod
    def from_range(cls, low: float, high: float, bits: int, symmetric: bool) -> "ActFakeQuant":
        from torch.ao.quantization.observer import MinMaxObserver

        signed = symmetric
        qmin, qmax = quant_range(bits, signed=signed, symmetric=False)
        obs = MinMaxObserver(dtype=_observer_dtype(bits, signed), quant_min=qmin, quant_max=qmax,
                             qscheme=torch.per_tensor_symmetric if symmetric
                             else torch.per_tensor_affine)
        obs(torch.tensor([float(low), float(high)]))
        scale, zero = obs.calculate_qparams()
        return cls(float(scale), int(zero), qmin, qmax, bits)


def act_quantizers(model) -> Dict[str, ActFakeQuant]:
    """Name -> activation fake quantizer of every layer that has one."""
    if not isinstance(model, nn.Module):
        return {}
    return {n: h for n, m in model.named_modules() for h in m._forward_pre_hooks.values()
            if isinstance(h, ActFakeQuant)}


def set_act_quantizer(module: nn.Module, quantizer: Optional[ActFakeQuant]) -> None:
    """Attach ``quantizer`` to ``module`` (replacing any earlier one; None removes it)."""
    for key in [k for k, h in module._forward_pre_hooks.items() if isinstance(h, ActFakeQuant)]:
        del module._forward_pre_hooks[key]
    if quantizer is not None:
        module.register_forward_pre_hook(quantizer)


class _RangeRecorder:
    """Forward pre-hook collecting a layer input's range over calibration batches."""

    def __init__(self, mode: str, percentile: float, generator: torch.Generator):
        from torch.ao.quantization.observer import MinMaxObserver

        self.mode, self.q = mode, percentile / 100.0
        self.generator, self.lows, self.highs = generator, [], []
        self.observer = MinMaxObserver()

    def __call__(self, module, args):
        x = args[0].detach().float()
        if self.mode == "minmax":
            self.observer(x)
            return None
        flat = x.flatten()
        if flat.numel() > _PERCENTILE_VALUES:
            flat = flat[torch.randint(flat.numel(), (_PERCENTILE_VALUES,),
                                      generator=self.generator)]
        bounds = torch.quantile(flat, torch.tensor([1.0 - self.q, self.q]))
        self.lows.append(float(bounds[0]))
        self.highs.append(float(bounds[1]))
        return None

    def range(self) -> Tuple[float, float]:
        if self.mode == "minmax":
            return float(self.observer.min_val), float(self.observer.max_val)
        return sum(self.lows) / len(self.lows), sum(self.highs) / len(self.highs)


@no_grad
def _eps_error(reference: List[torch.Tensor], unet, batches: List[CalibrationBatch]) -> float:
    num = den = 0.0
    for ref, b in zip(reference, batches):
        out = unet(b.sample, b.timesteps()).sample
        num += float((out - ref).square().sum())
        den += float(ref.square().sum())
    return (num / den) ** 0.5 if den else 0.0


class SimulatedQuant(Stage):
    """Fake-quantize weights and activations (quality only); see the module docstring."""

    name = "quant-simulated"
    family = "quant"
    headline = ("weight_bits",)

    @dataclass
    class Config:
        weight_bits: int = option(8, "bits of the weights, symmetric", low=2, high=16)
        act_bits: int = option(8, "bits of each layer's input (2 to 16); 0 = fp32 activations",
                             low=0, high=16)
        per_channel: bool = option(True, "one weight scale per output channel (else per tensor)")
        act_range: str = option("minmax", "activation range from calibration", ACT_RANGES)
        percentile: float = option(99.99, "percentile range: upper percentile (lower = 100 − p)",
                                    low=50.0, high=100.0, open_low=True)
        act_symmetric: bool = option(False, "symmetric activation grid (else affine)")
        protect: Tuple[str, ...] = option(("first_last_conv",), "modules left in fp32",
                                          PROTECT_SETS)
        calib_images: int = option(32, "calibration: images sampled", low=1)
        calib_steps: int = option(50, "calibration: sampling steps of the trajectory", low=1)
        calib_every: int = option(5, "calibration: record the UNet input every c-th step", low=1)
        calib_sampler: str = option("ddim", "calibration: sampler", SAMPLER_NAMES)
        seed: int = option(0, "calibration: seed of the starting noise")

    def check(self) -> None:
        c = self.config
        if c.act_bits == 1:
            raise LiteDiffError(f"{self.name}: act_bits must be 0 (fp32) or in 2..16, not 1")

    def label(self) -> str:
        c = self.config
        return f"W{c.weight_bits}A{c.act_bits if c.act_bits else 32}"

    def transform(self, state: CompressState, progress: Optional[Progress] = None,
                  calibration: Optional[List[CalibrationBatch]] = None):
        """Quantize a copy of ``state.unet``. ``calibration`` (else batches sampled with
        ``state.scheduler``'s config) feeds the activation ranges and the reported error."""
        c = self.config
        require_torch_weights(state.unet, self.name)
        unet = make_permanent(clone_model(state.unet)).eval()
        skip = all_submodules(protected_modules(unet, c.protect))
        layers = {n: m for n, m in unet.named_modules()
                  if isinstance(m, (nn.Conv2d, nn.Linear)) and m not in skip}
        if not layers:
            raise LiteDiffError(f"{self.name}: every layer is protected, nothing to quantize")
        if calibration is None:
            calibration = calibration_inputs(unet, dict(state.scheduler.config), c.calib_images,
                                             c.calib_steps, c.calib_every, c.calib_sampler,
                                             c.seed, progress, self.name)
        with torch.no_grad():
            reference = [unet(b.sample, b.timesteps()).sample for b in calibration]
        ranges = self._calibrate(unet, layers, calibration) if c.act_bits else {}
        with torch.no_grad():
            for name, m in layers.items():
                m.weight.copy_(fake_quantize_weight(m.weight, c.weight_bits, c.per_channel))
                set_act_quantizer(m, None if not c.act_bits else ActFakeQuant.from_range(
                    *ranges[name], c.act_bits, c.act_symmetric))
        error = _eps_error(reference, unet, calibration)
        report(progress, 1, 1, f"{self.name}: done")
        state.note(NOTE.format(self.label()))
        return unet, {"label": self.label(), "layers": len(layers),
                      "calibration_timesteps": [b.timestep for b in calibration],
                      "calibration_samples": sum(b.sample.shape[0] for b in calibration),
                      "relative_eps_error": error}

    def _calibrate(self, unet, layers, calibration) -> Dict[str, Tuple[float, float]]:
        c = self.config
        generator = torch.Generator().manual_seed(c.seed)
        recorders = {n: _RangeRecorder(c.act_range, c.percentile, generator) for n in layers}
        handles = [m.register_forward_pre_hook(recorders[n]) for n, m in layers.items()]
        try:
            with torch.no_grad():
                for b in calibration:
                    unet(b.sample, b.timesteps())
        finally:
            for h in handles:
                h.remove()
        return {n: r.range() for n, r in recorders.items()}


# ----------------------------------------------------------------------------- saving

def _record(model, folder) -> Optional[dict]:
    quantizers = act_quantizers(model)
    return {"layers": {n: q.to_dict() for n, q in quantizers.items()}} if quantizers else None


def _finish(unet, record, folder):
    for name, q in record["layers"].items():
        set_act_quantizer(unet.get_submodule(name), ActFakeQuant(**q))
    return unet


register_io_hook(IOHook("quant-simulated", record=_record, finish=_finish))

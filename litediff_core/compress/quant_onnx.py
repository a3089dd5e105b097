"""Real int8 on the CPU: the UNet exported to ONNX and statically quantized for ONNX Runtime.

Steps (the recipe that was fastest on this kind of CPU, see ``shared/pitfalls.md``):

1. ``torch.onnx.export`` (the torch.export-based exporter) of ``unet(sample, timestep)`` with a
   dynamic batch, as one self-contained file (``external_data=False``); ``timestep`` is a float
   vector, one per image.
2. ``onnxruntime.quantization.quant_pre_process(..., skip_symbolic_shape=True)``.
3. ``quantize_static`` in QDQ format: int8 weights per output channel (``QuantType.QInt8``;
   with ``reduce_range``, the default, restricted to 7 bits: ONNX Runtime's uint8 × int8
   kernels add pairs of products in 16 bits on x86 CPUs without VNNI, which saturates with
   full-range weights — on this project's AVX2 CPU the embedded model's relative error fell
   from 0.055 to 0.011 with it, see ``benchmarks/results.md``),
   ``activation_type`` activations (per tensor, asymmetric), ops Conv / MatMul / Gemm, the
   first and last convolution left in fp32 (``keep_first_last``). Activation ranges come from a
   ``CalibrationDataReader`` fed with timestep-aware calibration inputs (:mod:`._calibration`:
   the fp32 model samples from fixed noise and the UNet input at every ``calib_every``-th step
   is kept, as in Q-Diffusion / PTQ4DM); by default each range is the 99.99th percentile of
   |x| (``calibration``), which clips rare outliers and resolves the rest finer: on the
   embedded model, 64 DDIM-50 samples from the same noise as fp32 had SSIM 0.977 / PSNR 34.4 dB
   against 0.954 / 32.0 dB with min/max ranges.
4. :class:`OnnxUNet`, a small ``torch.nn.Module`` running an ``InferenceSession``, replaces
   ``state.unet``: it has the UNet's ``config``, ``eval()``, ``to("cpu")``, and returns an object
   with ``.sample``, so :func:`litediff_core.samplers.generate` and
   :func:`litediff_core.metrics.step_latency` use it unchanged. ``fp32_reference()`` gives the
   same wrapper around the ONNX fp32 export, for comparing ORT fp32 with ORT int8.

The wrapper runs on the CPU only, has no parameters (later PyTorch stages cannot follow it) and
keeps the int8 ONNX file in a uint8 buffer, so ``metrics.model_bytes`` gives its real size;
:meth:`OnnxUNet.size_report` gives params and MACs (those of the exported torch model). With
``threads=0`` each session uses ``torch.get_num_threads()`` intra-op threads (re-created when
that changes), so ``step_latency(threads=...)`` applies to it too.

Saving (IO hook): the torch model is saved as usual and ``onnx/unet_int8.onnx`` and
``onnx/unet_fp32.onnx`` are written beside it; loading wraps the loaded UNet again. The same
hook saves ``runtime-onnx``'s fp32 session model (``onnx/unet_fp32.onnx``, no reference); the
record's ``int8`` key names the session's file whatever its precision.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Optional, Tuple

from .._lazy import exported_from
from ..errors import LiteDiffError
from ..progress import Progress, report
from ..recipes import SAMPLER_NAMES
from ._io_hooks import IOHook, register_io_hook
from .base import CompressState, Stage, clone_model, option
from .unstructured import make_permanent

OP_TYPES = ("Conv", "MatMul", "Gemm")
ACTIVATION_TYPES = ("uint8", "int8")
CALIBRATION_METHODS = ("percentile", "minmax")
INT8_FILE, FP32_FILE = "onnx/unet_int8.onnx", "onnx/unet_fp32.onnx"
# the ONNX code (nn.Module: torch) is imported where it is used
__getattr__ = exported_from(__name__, __package__, dict.fromkeys((
    "OnnxUNet", "export_onnx", "make_session", "quantize_onnx", "first_and_last_conv",
    "UNetCalibrationReader"), "._onnx"))


def _require_onnx():
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as e:
        raise LiteDiffError(f"ONNX int8 needs the packages onnx, onnxscript and onnxruntime "
                            f"({e.name} is missing): pip install onnx onnxscript "
                            f"onnxruntime") from None


@contextmanager
def _quiet():
    """Silence the exporter's and the quantizer's warnings and log lines."""
    import logging

    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo",
                                               "onnxscript", "onnx_ir", "root")]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)


class OnnxInt8(Stage):
    """Static int8 with ONNX Runtime (real CPU speed-up); see the module docstring."""

    name = "quant-onnx-int8"
    family = "quant"

    @dataclass
    class Config:
        per_channel: bool = option(True, "one weight scale per output channel")
        reduce_range: bool = option(True, "7-bit weights: without it, ONNX Runtime's uint8 × "
                                    "int8 kernels can saturate on x86 CPUs without VNNI")
        activation_type: str = option("uint8", "type of the quantized activations",
                                      ACTIVATION_TYPES)
        op_types: Tuple[str, ...] = option(OP_TYPES, "ONNX operators quantized", OP_TYPES)
        keep_first_last: bool = option(True, "leave the first and last convolution in fp32")
        calibration: str = option("percentile", "activation ranges: the percentile of |x| "
                                  "over the calibration inputs, or their min/max",
                                  CALIBRATION_METHODS)
        percentile: float = option(99.99, "percentile calibration: the percentile kept",
                                    low=90.0, high=100.0)
        calib_images: int = option(32, "calibration: images sampled", low=1)
        calib_steps: int = option(50, "calibration: sampling steps of the trajectory", low=1)
        calib_every: int = option(5, "calibration: record the UNet input every c-th step", low=1)
        calib_sampler: str = option("ddim", "calibration: sampler", SAMPLER_NAMES)
        seed: int = option(0, "calibration: seed of the starting noise")
        threads: int = option(0, "ONNX Runtime intra-op threads; 0 = torch.get_num_threads()",
                             low=0)

    def check(self) -> None:
        c = self.config
        if not c.op_types:
            raise LiteDiffError(f"{self.name}: choose at least one operator type")

    def transform(self, state: CompressState, progress: Optional[Progress] = None,
                  calibration: Optional[list] = None):
        """Export, quantize and wrap a copy of ``state.unet``; ``calibration`` (else batches
        sampled with ``state.scheduler``'s config: ``CalibrationBatch`` es) feeds the
        activation ranges."""
        from ._calibration import calibration_inputs
        from ._onnx import OnnxUNet, _relative_error, export_onnx, quantize_onnx

        c = self.config
        _require_onnx()
        if isinstance(state.unet, OnnxUNet):
            raise LiteDiffError(f"{self.name}: the model is already an ONNX Runtime model")
        if any(type(m).__module__.startswith("torch.ao.nn.quantized")
               for m in state.unet.modules()):
            raise LiteDiffError(f"{self.name}: the model holds PyTorch int8 layers "
                                f"(quant-dynamic); export the fp32 model instead")
        source = make_permanent(clone_model(state.unet)).float().cpu().eval()
        report(progress, 0, 3, f"{self.name}: exporting to ONNX")
        fp32 = export_onnx(source)
        if calibration is None:
            calibration = calibration_inputs(source, dict(state.scheduler.config),
                                             c.calib_images, c.calib_steps, c.calib_every,
                                             c.calib_sampler, c.seed, None, self.name)
        report(progress, 1, 3, f"{self.name}: calibrating and quantizing")
        int8, info = quantize_onnx(fp32, calibration, c.op_types, c.per_channel,
                                   c.keep_first_last, c.activation_type,
                                   reduce_range=c.reduce_range, method=c.calibration,
                                   percentile=c.percentile)
        model = OnnxUNet(int8, source.config, c.threads, source, fp32)
        report(progress, 2, 3, f"{self.name}: checking")
        check = calibration[:1] + calibration[-1:] if len(calibration) > 1 else calibration
        export_error = _relative_error(model.fp32_reference(), source, check)
        int8_error = _relative_error(model, source, check)
        report(progress, 3, 3, f"{self.name}: done")
        state.note(f"real int8 (ONNX Runtime, static QDQ: "
                   f"{'per-channel' if c.per_channel else 'per-tensor'} "
                   f"{'7-bit' if c.reduce_range else 'int8'} weights, "
                   f"{c.activation_type} activations ("
                   f"{f'{c.percentile:g}th percentile' if c.calibration == 'percentile' else 'min/max'}"
                   f" ranges), {'/'.join(c.op_types)}"
                   f"{', first and last conv in fp32' if c.keep_first_last else ''}): CPU only; "
                   f"the model is now an ONNX Runtime session, so PyTorch stages (pruning, "
                   f"fine-tuning) cannot follow it")
        return model, {"fp32_onnx_bytes": len(fp32), "int8_onnx_bytes": len(int8), **info,
                       "calibration_timesteps": [b.timestep for b in calibration],
                       "calibration_samples": sum(b.sample.shape[0] for b in calibration),
                       "relative_error_ort_fp32": export_error,
                       "relative_error_int8": int8_error}


# ----------------------------------------------------------------------------- saving

def _is_onnx(model) -> bool:
    from ._onnx import OnnxUNet  # a model exists: torch is loaded

    return isinstance(model, OnnxUNet)


def _unwrap(model):
    return model.source if _is_onnx(model) else None


def _record(model, folder) -> Optional[dict]:
    if not _is_onnx(model):
        return None
    if model.source is None:
        raise LiteDiffError("an ONNX model without its torch source cannot be saved")
    # the session's model: int8 (quant-onnx-int8) or fp32 (runtime-onnx, no reference then)
    path = INT8_FILE if model.label == "int8" else f"onnx/unet_{model.label}.onnx"
    (folder / path).parent.mkdir(parents=True, exist_ok=True)
    (folder / path).write_bytes(model.model_bytes)
    record = {"int8": path, "threads": model.threads, "label": model.label}
    if model.reference_bytes is not None:
        (folder / FP32_FILE).write_bytes(model.reference_bytes)
        record["fp32"] = FP32_FILE
    return record


def _finish(unet, record, folder):
    from ..errors import ModelSourceError
    from ._onnx import OnnxUNet

    try:
        int8 = (folder / record["int8"]).read_bytes()
        fp32 = (folder / record["fp32"]).read_bytes() if record.get("fp32") else None
    except OSError as e:
        raise ModelSourceError(f"cannot read the ONNX files of {folder}: {e}") from None
    return OnnxUNet(int8, unet.config, record.get("threads", 0), unet, fp32,
                    record.get("label", "int8"))


register_io_hook(IOHook("quant-onnx-int8", record=_record, unwrap=_unwrap, finish=_finish))

"""ONNX Runtime in fp32: the same model and the same numbers, run by a faster CPU engine.

Nothing is compressed: the UNet is exported to ONNX (``quant_onnx.export_onnx``, the export the
int8 stage quantizes) and an ONNX Runtime session runs it on the CPU (``OnnxUNet``, labelled
``fp32``). The outputs equal PyTorch's up to float rounding; the stage measures that on a few
sampled inputs and records it (``relative_error_ort_fp32``, about 1e-7). What changes is the
time a user waits, which depends on the CPU: ``benchmarks/cpu_backends.md`` (one step, batch
1/16/64) and ``benchmarks/time_axis.md`` (whole images, "ONNX Runtime fp32" rows) measure it
against PyTorch in the same run. On this project's 2-core AVX2 CPU it is the one backend there
that is faster at equal quality: the Diff-Pruning 30 % model recovered by distillation, sampled
with DPM-Solver++ in 7 steps (batch 16), draws an image 9.6× faster than the dense model at
DDIM 50 in PyTorch and 12.2× faster in ONNX Runtime, at FID 75.6 in both. Every run measures its
own ratios (per step and per image, against the dense PyTorch model), so a CPU where it loses
shows that too.

It composes with every PyTorch stage before it (pruning, distillation, LoRA merged into the
weights, low rank) and with the recipe's sampler and steps; nothing can follow it (the graph
runs whole, so DeepCache and PyTorch stages cannot), and it runs on the CPU only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

from ..errors import LiteDiffError
from ..progress import Progress, report
from .base import CompressState, Stage, clone_model, option
from .quant_onnx import _require_onnx
from .unstructured import make_permanent


def onnx_runtime_unet(unet, threads: int = 0):
    """``unet`` (a torch UNet2DModel, left untouched) as an ONNX Runtime fp32 model
    (an ``OnnxUNet``)."""
    from ._onnx import OnnxUNet, export_onnx

    _require_onnx()
    if isinstance(unet, OnnxUNet):
        raise LiteDiffError("runtime-onnx: the model is already an ONNX Runtime model")
    if any(type(m).__module__.startswith("torch.ao.nn.quantized") for m in unet.modules()):
        raise LiteDiffError("runtime-onnx: the model holds PyTorch int8 layers (quant-dynamic), "
                            "which ONNX export does not take; leave quant-dynamic out")
    source = make_permanent(clone_model(unet)).float().cpu().eval()
    return OnnxUNet(export_onnx(source), source.config, threads, source, None, "fp32")


class OnnxRuntime(Stage):
    """Run the model with ONNX Runtime in fp32 on the CPU: same numbers, less time."""

    name = "runtime-onnx"
    family = "runtime"
    must_be_last: ClassVar[bool] = True
    last_because: ClassVar[str] = "runs the whole graph in ONNX Runtime"

    @dataclass
    class Config:
        threads: int = option(0, "ONNX Runtime intra-op threads; 0 = torch.get_num_threads()",
                              low=0)
        check_images: int = option(4, "images sampled to check the outputs against PyTorch",
                                   low=1)

    def transform(self, state: CompressState, progress: Optional[Progress] = None):
        from ._calibration import calibration_inputs
        from ._onnx import _relative_error

        c = self.config
        report(progress, 0, 2, f"{self.name}: exporting to ONNX")
        model = onnx_runtime_unet(state.unet, c.threads)
        report(progress, 1, 2, f"{self.name}: checking the outputs against PyTorch")
        batches = calibration_inputs(model.source, dict(state.scheduler.config), c.check_images,
                                     10, 5, "ddim", 0, None, self.name)
        error = _relative_error(model, model.source, batches)
        report(progress, 2, 2, f"{self.name}: done")
        state.note(f"ONNX Runtime fp32 (not quantized: relative error {error:.1e} to PyTorch "
                   f"on sampled inputs): CPU only; nothing can follow it in a recipe")
        return model, {"onnx_bytes": int(model.onnx_model.numel()),
                       "relative_error_ort_fp32": error}

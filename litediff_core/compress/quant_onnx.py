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

import tempfile
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn

from ..errors import LiteDiffError, MetricError
from ..progress import Progress, report
from ..samplers import SAMPLERS
from ._calibration import CalibrationBatch, calibration_inputs
from ._io_hooks import IOHook, register_io_hook
from .base import CompressState, Stage, clone_model, option
from .unstructured import make_permanent

OP_TYPES = ("Conv", "MatMul", "Gemm")
ACTIVATION_TYPES = ("uint8", "int8")
CALIBRATION_METHODS = ("percentile", "minmax")
INT8_FILE, FP32_FILE = "onnx/unet_int8.onnx", "onnx/unet_fp32.onnx"


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


# ----------------------------------------------------------------------------- export

class _Forward(nn.Module):
    """``unet(sample, timestep)`` -> the output tensor (what the exporter traces)."""

    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep):
        return self.unet(sample, timestep, return_dict=False)[0]


def _image_shape(config) -> Tuple[int, int, int]:
    size = config["sample_size"]
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    return int(config["in_channels"]), int(h), int(w)


def export_onnx(unet: nn.Module) -> bytes:
    """The fp32 ONNX graph of ``unet(sample, timestep)`` (inputs ``sample`` B×C×H×W float32 and
    ``timestep`` B float32, output ``out``; B dynamic) as the bytes of one file. ``unet``: an
    fp32 CPU model in eval mode (not modified)."""
    _require_onnx()
    g = torch.Generator().manual_seed(0)
    sample = torch.randn(2, *_image_shape(unet.config), generator=g)
    timestep = torch.tensor([10.0, 500.0])
    batch = torch.export.Dim("batch")
    with _quiet(), torch.no_grad():
        program = torch.onnx.export(
            _Forward(unet), (sample, timestep), None, input_names=["sample", "timestep"],
            output_names=["out"], dynamo=True, external_data=False, verbose=False,
            dynamic_shapes={"sample": {0: batch}, "timestep": {0: batch}})
    model = program.model_proto
    for node in model.graph.node:  # the exporter's stack traces: not part of the model
        del node.metadata_props[:]
        node.doc_string = ""
    return model.SerializeToString()


# ----------------------------------------------------------------------------- ONNX Runtime

def make_session(model_bytes: bytes, threads: int):
    """A CPU ``InferenceSession`` with ``threads`` intra-op threads (one inter-op thread).

    Its threads do not spin-wait between calls: a sampling loop runs PyTorch ops (the scheduler
    step) between UNet calls, and on a small machine spinning ORT threads slow those down (and
    a spinning PyTorch pool slows ORT: measured 35 instead of 20 ms per step at 2 threads)."""
    _require_onnx()
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


class OnnxUNet(nn.Module):
    """A UNet run by ONNX Runtime on the CPU, called like a diffusers ``UNet2DModel``:
    ``unet(sample, timestep).sample`` (``timestep`` a scalar or one per image)."""

    def __init__(self, model_bytes: bytes, config, threads: int = 0, source: nn.Module = None,
                 reference_bytes: Optional[bytes] = None, label: str = "int8"):
        super().__init__()
        self.config = config
        self.threads, self.label = int(threads), label
        self.register_buffer("onnx_model", torch.from_numpy(
            np.frombuffer(model_bytes, dtype=np.uint8).copy()))
        # not submodules / buffers: the torch model exported (for sizes and saving) and the
        # fp32 export (for comparisons)
        self.__dict__["source"] = source
        self.__dict__["reference_bytes"] = reference_bytes
        self._session, self._session_threads = None, None

    @property
    def model_bytes(self) -> bytes:
        return self.onnx_model.numpy().tobytes()

    def session(self):
        threads = self.threads or torch.get_num_threads()
        if self._session is None or self._session_threads != threads:
            self._session, self._session_threads = make_session(self.model_bytes, threads), threads
        return self._session

    def fp32_reference(self) -> "OnnxUNet":
        """The same wrapper around the fp32 ONNX export (ORT fp32, for comparisons)."""
        if self.reference_bytes is None:
            raise LiteDiffError("this ONNX model has no fp32 reference")
        return OnnxUNet(self.reference_bytes, self.config, self.threads, self.source, None,
                        "fp32").train(self.training)

    def forward(self, sample, timestep, return_dict: bool = True, **unused):
        from diffusers.models.unets.unet_2d import UNet2DOutput

        if torch.jit.is_tracing():
            raise MetricError("an ONNX Runtime model cannot be traced to count MACs: use its "
                              "size_report() (MACs of the exported torch model)")
        if sample.device.type != "cpu":
            raise LiteDiffError("the ONNX Runtime model runs on the CPU only")
        t = torch.as_tensor(timestep).detach().float().cpu().reshape(-1)
        if t.numel() == 1:
            t = t.expand(sample.shape[0])
        out = self.session().run(None, {"sample": sample.detach().float().contiguous().numpy(),
                                        "timestep": t.contiguous().numpy()})[0]
        out = torch.from_numpy(out).to(sample.dtype)
        return UNet2DOutput(sample=out) if return_dict else (out,)

    def to(self, *args, **kwargs):
        device = torch._C._nn._parse_to(*args, **kwargs)[0]
        if device is not None and torch.device(device).type != "cpu":
            raise LiteDiffError("the ONNX Runtime model runs on the CPU only")
        return self

    def cuda(self, device=None):
        raise LiteDiffError("the ONNX Runtime model runs on the CPU only")

    def size_report(self) -> dict:
        """``metrics.size_report`` keys: params, non-zeros and MACs of the exported torch model
        (quantization changes their storage, not their number), bytes of the ONNX file."""
        from ..metrics.size import count_nonzero, count_params, macs_per_image

        if self.source is None:
            raise MetricError("this ONNX model has no torch source to count params and MACs")
        return {"params": count_params(self.source),
                "nonzero_params": count_nonzero(self.source),
                "bytes": int(self.onnx_model.numel()),
                "macs_per_image": macs_per_image(self.source)}

    def __getstate__(self):  # deepcopy: sessions are rebuilt on demand
        state = self.__dict__.copy()
        state["_session"] = state["_session_threads"] = None
        return state

    def extra_repr(self) -> str:
        return f"{self.label}, {self.onnx_model.numel():,} bytes, threads={self.threads or 'torch'}"


# ----------------------------------------------------------------------------- quantization

class UNetCalibrationReader:
    """An ``onnxruntime.quantization.CalibrationDataReader`` (which is any class with
    ``get_next``) over calibration batches, each cut into chunks of at most ``chunk`` images:
    ``{"sample": float32 B×C×H×W, "timestep": float32 B}``."""

    def __init__(self, batches: List[CalibrationBatch], chunk: int = 16):
        self.batches, self.chunk = list(batches), max(1, int(chunk))
        self._iter: Optional[Iterator[dict]] = None

    def __len__(self) -> int:
        return sum(-(-b.sample.shape[0] // self.chunk) for b in self.batches)

    def feeds(self) -> Iterator[dict]:
        for b in self.batches:
            for start in range(0, b.sample.shape[0], self.chunk):
                x = b.sample[start:start + self.chunk]
                yield {"sample": x.float().contiguous().numpy(),
                       "timestep": np.full((x.shape[0],), float(b.timestep), dtype=np.float32)}

    def get_next(self) -> Optional[dict]:
        if self._iter is None:
            self._iter = self.feeds()
        return next(self._iter, None)

    def rewind(self) -> None:
        self._iter = None


def first_and_last_conv(model) -> List[str]:
    """Names of the first and the last Conv node of an ONNX model (nodes are topologically
    sorted: the UNet's conv_in and conv_out)."""
    convs = [n.name for n in model.graph.node if n.op_type == "Conv"]
    return sorted({convs[0], convs[-1]}) if convs else []


def quantize_onnx(fp32_bytes: bytes, calibration: List[CalibrationBatch],
                  op_types=OP_TYPES, per_channel: bool = True, keep_first_last: bool = True,
                  activation_type: str = "uint8", chunk: int = 16,
                  reduce_range: bool = True, method: str = "percentile",
                  percentile: float = 99.99) -> Tuple[bytes, dict]:
    """``(int8 bytes, info)``: ``quant_pre_process`` then static QDQ quantization of an fp32
    export calibrated on ``calibration``: activation ranges from the min/max (``method`` =
    "minmax") or the ``percentile`` of |x| ("percentile": ORT's histogram calibrator, which
    keeps every activation of every batch in memory: ~3.5 GB for the embedded model's 320
    calibration inputs); ``info`` counts the quantized operators."""
    _require_onnx()
    import onnx
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType,
                                          quant_pre_process, quantize_static)

    with tempfile.TemporaryDirectory(prefix="litediff-onnx-") as tmp, _quiet():
        tmp = Path(tmp)
        (tmp / "fp32.onnx").write_bytes(fp32_bytes)
        quant_pre_process(str(tmp / "fp32.onnx"), str(tmp / "pre.onnx"),
                          skip_symbolic_shape=True)
        pre = onnx.load(str(tmp / "pre.onnx"))
        exclude = first_and_last_conv(pre) if keep_first_last else []
        quantize_static(
            str(tmp / "pre.onnx"), str(tmp / "int8.onnx"),
            UNetCalibrationReader(calibration, chunk),
            quant_format=QuantFormat.QDQ, op_types_to_quantize=list(op_types),
            per_channel=per_channel, reduce_range=reduce_range,
            activation_type={"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}[activation_type],
            weight_type=QuantType.QInt8, nodes_to_exclude=exclude,
            calibrate_method={"minmax": CalibrationMethod.MinMax,
                              "percentile": CalibrationMethod.Percentile}[method],
            extra_options={"CalibPercentile": percentile} if method == "percentile" else {})
        int8 = (tmp / "int8.onnx").read_bytes()
    graph = onnx.load_from_string(int8).graph
    dequantized = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    ops = {}
    for n in graph.node:  # an operator runs in int8 when its inputs come dequantized
        if n.op_type in op_types and any(i in dequantized for i in n.input):
            ops[n.op_type] = ops.get(n.op_type, 0) + 1
    total = sum(n.op_type in op_types for n in pre.graph.node)
    return int8, {"excluded_nodes": exclude, "quantized_ops": ops, "candidate_ops": total}


def _relative_error(model, reference, batches: List[CalibrationBatch]) -> float:
    """‖model − reference‖ / ‖reference‖ of the noise prediction over ``batches``."""
    num = den = 0.0
    with torch.no_grad():
        for b in batches:
            ref = reference(b.sample, b.timesteps()).sample
            num += float((model(b.sample, b.timesteps()).sample - ref).square().sum())
            den += float(ref.square().sum())
    return (num / den) ** 0.5 if den else 0.0


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
        calib_sampler: str = option("ddim", "calibration: sampler", SAMPLERS)
        seed: int = option(0, "calibration: seed of the starting noise")
        threads: int = option(0, "ONNX Runtime intra-op threads; 0 = torch.get_num_threads()",
                             low=0)

    def check(self) -> None:
        c = self.config
        if not c.op_types:
            raise LiteDiffError(f"{self.name}: choose at least one operator type")

    def transform(self, state: CompressState, progress: Optional[Progress] = None,
                  calibration: Optional[List[CalibrationBatch]] = None):
        """Export, quantize and wrap a copy of ``state.unet``; ``calibration`` (else batches
        sampled with ``state.scheduler``'s config) feeds the activation ranges."""
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

def _unwrap(model):
    return model.source if isinstance(model, OnnxUNet) else None


def _record(model, folder) -> Optional[dict]:
    if not isinstance(model, OnnxUNet):
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

    try:
        int8 = (folder / record["int8"]).read_bytes()
        fp32 = (folder / record["fp32"]).read_bytes() if record.get("fp32") else None
    except OSError as e:
        raise ModelSourceError(f"cannot read the ONNX files of {folder}: {e}") from None
    return OnnxUNet(int8, unet.config, record.get("threads", 0), unet, fp32,
                    record.get("label", "int8"))


register_io_hook(IOHook("quant-onnx-int8", record=_record, unwrap=_unwrap, finish=_finish))

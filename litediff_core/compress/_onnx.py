"""ONNX export, ONNX Runtime sessions and static int8 quantization for the ``quant-onnx-int8``
and ``runtime-onnx`` stages (see :mod:`.quant_onnx`): ``nn.Module`` code, kept apart so that
the stage registry loads without torch."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn

from ..errors import LiteDiffError, MetricError
from ._calibration import CalibrationBatch
from .quant_onnx import OP_TYPES, _quiet, _require_onnx


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

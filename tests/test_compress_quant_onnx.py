import copy

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from litediff_core.compress import (STAGES, CompressState, DynamicInt8, LowRank,  # noqa: E402
                                    OnnxInt8, OnnxUNet, SimulatedQuant, describe_stage,
                                    load_compressed, save_compressed)
from litediff_core.compress._calibration import calibration_inputs  # noqa: E402
from litediff_core.compress.quant_onnx import UNetCalibrationReader  # noqa: E402
from litediff_core.errors import LiteDiffError  # noqa: E402
from litediff_core.metrics import model_bytes, step_latency  # noqa: E402
from litediff_core.samplers import generate  # noqa: E402

CALIB = dict(calib_images=4, calib_steps=10, calib_every=3)


def tiny():
    from diffusers import UNet2DModel

    torch.manual_seed(0)  # conftest's tiny_unet, built once for the module
    return UNet2DModel(sample_size=16, in_channels=1, out_channels=1, layers_per_block=1,
                       block_out_channels=(8, 16),
                       down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D"), attention_head_dim=8,
                       norm_num_groups=4).eval()


@pytest.fixture(scope="module")
def quantized():
    """One export + quantization for the module (one ORT thread)."""
    from diffusers import DDPMScheduler

    from litediff_core.models.embedded import ddpm_scheduler_config

    base, scheduler = tiny(), DDPMScheduler(**ddpm_scheduler_config())
    state = CompressState.start(base, scheduler)
    OnnxInt8(**CALIB, threads=1).apply(state)
    return base, state


def inputs(n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn((n, 1, 16, 16), generator=g), torch.randint(1000, (n,), generator=g)


def relative(a, b):
    return float((a - b).norm() / b.norm())


def test_registry_and_options():
    assert STAGES["quant-onnx-int8"] is OnnxInt8
    options = {o["name"]: o for o in describe_stage("quant-onnx-int8")}
    assert options["op_types"]["default"] == ["Conv", "MatMul", "Gemm"]
    assert options["activation_type"]["choices"] == ["uint8", "int8"]
    assert options["calibration"]["choices"] == ["percentile", "minmax"]
    assert options["calibration"]["default"] == "percentile" and options["reduce_range"]["default"]
    for bad in ({"op_types": []}, {"threads": -1}, {"calib_images": 0}, {"percentile": 50},
                {"calibration": "entropy"}):
        with pytest.raises(LiteDiffError):
            OnnxInt8(**bad)


def test_ort_fp32_matches_pytorch(quantized):
    base, state = quantized
    fp32 = state.unet.fp32_reference()
    for n in (1, 3, 70):  # the batch is dynamic (diffusers branches at 64)
        x, t = inputs(n)
        with torch.no_grad():
            ref = base(x, t).sample
        out = fp32(x, t).sample
        assert out.shape == ref.shape and float((out - ref).abs().max()) < 1e-4
    x, _ = inputs(2)
    with torch.no_grad():  # a scalar timestep (what samplers pass) is broadcast
        assert float((fp32(x, torch.tensor(500)).sample - base(x, torch.tensor(500)).sample)
                     .abs().max()) < 1e-4
    assert state.log[-1]["relative_error_ort_fp32"] < 1e-5


def test_int8_output_close_finite_and_really_int8(quantized):
    base, state = quantized
    x, t = inputs(5)
    with torch.no_grad():
        ref = base(x, t).sample
    out = state.unet(x, t).sample
    assert torch.isfinite(out).all() and 0 < relative(out, ref) < 0.25
    log = state.log[-1]
    assert log["relative_error_int8"] < 0.25 and log["int8_onnx_bytes"] < log["fp32_onnx_bytes"]
    assert len(log["excluded_nodes"]) == 2  # conv_in and conv_out stay fp32
    convs = log["quantized_ops"]["Conv"]
    assert convs == sum(isinstance(m, torch.nn.Conv2d) for m in base.modules()) - 2
    assert log["quantized_ops"]["MatMul"] > 0
    assert "CPU only" in state.notes[-1] and "first and last conv in fp32" in state.notes[-1]
    assert isinstance(state.unet, OnnxUNet) and state.unet.config == base.config
    # reduce_range (the default): the int8 weights use 7 bits, so ORT's u8×s8 kernels cannot
    # saturate on CPUs without VNNI (here the full range gave a relative error of 0.26)
    import onnx
    from onnx import numpy_helper

    graph = onnx.load_from_string(bytes(state.unet.model_bytes)).graph
    weights = [numpy_helper.to_array(i) for i in graph.initializer
               if i.data_type == onnx.TensorProto.INT8 and len(i.dims) > 1]
    assert len(weights) >= convs  # every quantized conv has its int8 weight tensor
    assert max(int(np.abs(w.astype(np.int16)).max()) for w in weights) == 64
    assert "7-bit weights" in state.notes[-1] and "99.99th percentile" in state.notes[-1]


def test_calibration_reader_yields_expected_samples(tiny_unet, ddpm_scheduler):
    batches = calibration_inputs(tiny_unet, dict(ddpm_scheduler.config), images=5, steps=10,
                                 every=4)
    reader = UNetCalibrationReader(batches, chunk=2)
    from onnxruntime.quantization import CalibrationDataReader

    assert isinstance(reader, CalibrationDataReader)
    feeds = list(iter(reader.get_next, None))
    assert len(feeds) == len(reader) == 3 * 3  # 3 recorded steps × ceil(5 / 2) chunks
    assert sum(f["sample"].shape[0] for f in feeds) == 15
    assert [float(f["timestep"][0]) for f in feeds[::3]] == [b.timestep for b in batches]
    assert all(f["sample"].dtype == np.float32 and f["timestep"].dtype == np.float32 and
               f["timestep"].shape == (f["sample"].shape[0],) for f in feeds)
    assert reader.get_next() is None
    reader.rewind()
    assert np.array_equal(reader.get_next()["sample"], batches[0].sample[:2].numpy())


def test_generate_and_step_latency_use_the_wrapper(quantized, ddpm_scheduler):
    base, state = quantized
    images = generate(state.unet, dict(ddpm_scheduler.config), "ddim", steps=3, n=3, seed=1,
                      batch_size=2)
    reference = generate(base, dict(ddpm_scheduler.config), "ddim", steps=3, n=3, seed=1,
                         batch_size=2)
    other = generate(base, dict(ddpm_scheduler.config), "ddim", steps=3, n=3, seed=2,
                     batch_size=2)
    assert images.shape == (3, 1, 16, 16) and torch.isfinite(images).all()
    # int8 follows the fp32 trajectory: far closer to it than fp32 from other noise is
    assert relative(images, reference) < 0.5 * relative(other, reference)
    timing = step_latency(state.unet, batch_size=2, repeats=1, warmup=0, threads=1)
    assert timing["median_s"] > 0 and timing["threads"] == 1


def test_wrapper_is_cpu_only_sized_and_copyable(quantized):
    _, state = quantized
    model = state.unet
    with pytest.raises(LiteDiffError):
        model.to("cuda")
    assert model.to("cpu") is model and not list(model.parameters())
    size = model.size_report()
    assert size["bytes"] == state.log[-1]["int8_onnx_bytes"] > 0
    assert size["params"] == sum(p.numel() for p in model.source.parameters())
    assert 0 < model_bytes(model) - size["bytes"] < 1000  # the ONNX file plus a header
    clone = copy.deepcopy(model)
    x, t = inputs(2)
    assert torch.equal(clone(x, t).sample, model(x, t).sample)


def test_save_and_reload_identical_outputs(quantized, tmp_path):
    _, state = quantized
    save_compressed(state, tmp_path / "model", {})
    assert (tmp_path / "model" / "onnx" / "unet_int8.onnx").read_bytes() == state.unet.model_bytes
    assert (tmp_path / "model" / "onnx" / "unet_fp32.onnx").exists()
    unet, _, _ = load_compressed(tmp_path / "model")
    assert isinstance(unet, OnnxUNet) and unet.threads == 1
    x, t = inputs(3)
    assert torch.equal(unet(x, t).sample, state.unet(x, t).sample)
    assert torch.equal(unet.fp32_reference()(x, t).sample,
                       state.unet.fp32_reference()(x, t).sample)


def test_torch_stages_refuse_the_onnx_model(quantized, ddpm_scheduler):
    base, state = quantized
    from litediff_core.compress import make_stage

    training = [make_stage({"stage": n, "config": {"steps": 1, "batch_size": 2}}) for n in ("finetune", "lora")]
    pruning = [make_stage({"stage": n, "config": {"ratio": 0.5}}) for n in ("structured-prune", "unstructured-prune")]
    for stage in (LowRank(), DynamicInt8(), SimulatedQuant(**CALIB), OnnxInt8(**CALIB),
                  make_stage({"stage": "distill", "config": {"steps": 1, "kd_frac": 0.0}}), *training, *pruning):
        with pytest.raises(LiteDiffError, match="ONNX Runtime"):
            stage.apply(CompressState(unet=state.unet, scheduler=ddpm_scheduler))
    dynamic = CompressState.start(base, ddpm_scheduler)
    DynamicInt8().apply(dynamic)
    with pytest.raises(LiteDiffError, match="quant-dynamic"):
        OnnxInt8(**CALIB).apply(dynamic)


def test_percentile_calibration_narrows_activation_ranges(quantized):
    """The 99.99th-percentile ranges (the default) are never wider than min/max ranges from the
    same calibration inputs, and some are narrower (the option reaches ORT's calibrator)."""
    import onnx
    from onnx import numpy_helper

    def activation_scales(model_bytes):
        graph = onnx.load_from_string(bytes(model_bytes)).graph
        inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
        return {n.input[0]: float(inits[n.input[1]]) for n in graph.node
                if n.op_type == "QuantizeLinear" and n.input[0] not in inits}

    base, state = quantized
    minmax = CompressState.start(base, state.scheduler)  # the same calibration inputs
    OnnxInt8(**CALIB, threads=1, calibration="minmax").apply(minmax)
    assert "min/max ranges" in minmax.notes[-1]
    p, m = activation_scales(state.unet.model_bytes), activation_scales(minmax.unet.model_bytes)
    assert p.keys() == m.keys() and len(p) > 10
    assert all(p[k] <= m[k] * (1 + 1e-6) for k in p)
    assert sum(p[k] < 0.99 * m[k] for k in p) > 0

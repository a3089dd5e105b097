"""runtime-onnx: ONNX Runtime fp32 gives PyTorch's numbers (to float rounding), composes after
PyTorch stages, refuses what cannot follow or precede it, and reloads as the same session."""

import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from litediff_core.compress import (CompressState, OnnxRuntime, OnnxUNet,  # noqa: E402
                                    StructuredPrune, load_compressed, save_compressed)
from litediff_core.compress.quant_dynamic import DynamicInt8  # noqa: E402
from litediff_core.errors import LiteDiffError  # noqa: E402
from litediff_core.recipes import Recipe  # noqa: E402


def inputs(n=3, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn((n, 1, size, size), generator=g), torch.randint(1000, (n,), generator=g)


def test_same_numbers_after_pruning_and_after_reload(tiny_unet, ddpm_scheduler, tmp_path):
    state = CompressState.start(tiny_unet, ddpm_scheduler)
    StructuredPrune(ratio=0.25, importance="l1").apply(state)
    pruned = state.unet
    OnnxRuntime(threads=1, check_images=2).apply(state)
    assert isinstance(state.unet, OnnxUNet) and state.unet.label == "fp32"
    entry = state.log[-1]
    assert entry["stage"] == "runtime-onnx" and entry["relative_error_ort_fp32"] < 1e-5
    x, t = inputs()
    with torch.no_grad():
        ref = pruned(x, t).sample
    out = state.unet(x, t).sample
    assert float((out - ref).abs().max()) < 1e-4
    # its size is the pruned model's (no compression of its own), its file the fp32 export
    assert state.unet.size_report()["params"] == sum(p.numel() for p in pruned.parameters())
    save_compressed(state, tmp_path / "model", {})
    assert (tmp_path / "model" / "onnx" / "unet_fp32.onnx").is_file()
    assert not (tmp_path / "model" / "onnx" / "unet_int8.onnx").exists()
    unet, _, _ = load_compressed(tmp_path / "model")
    assert isinstance(unet, OnnxUNet) and unet.label == "fp32"
    assert float((unet(x, t).sample - out).abs().max()) < 1e-6


def test_refused_where_it_cannot_run(tiny_unet, ddpm_scheduler):
    state = CompressState.start(tiny_unet, ddpm_scheduler)
    DynamicInt8().apply(state)
    with pytest.raises(LiteDiffError, match="quant-dynamic"):
        OnnxRuntime(threads=1).apply(state)
    with pytest.raises(LiteDiffError, match="threads"):
        OnnxRuntime(threads=-1)
    # nothing may follow it: DeepCache wraps a torch UNet, int8 re-exports one
    for after in ({"stage": "deepcache", "config": {"interval": 2}},
                  {"stage": "quant-onnx-int8"}):
        with pytest.raises(LiteDiffError, match="runtime-onnx runs the whole graph"):
            Recipe(base="embedded", stages=[{"stage": "runtime-onnx"}, after])

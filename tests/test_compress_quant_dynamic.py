import warnings

import pytest
import torch
import torch.nn as nn

from litediff_core.compress import (STAGES, CompressState, DynamicInt8, LowRank, describe_stage,
                                    load_compressed, save_compressed)
from litediff_core.compress.quant_dynamic import dynamic_layers
from litediff_core.errors import LiteDiffError
from litediff_core.metrics.size import layer_table, model_bytes


def outputs(unet, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((3, 1, 16, 16), generator=g)
    with torch.no_grad():
        return unet(x, torch.tensor([0, 250, 999])).sample


def quantize(unet, scheduler, **options):
    state = CompressState.start(unet, scheduler)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        DynamicInt8(**options).apply(state)
    return state, caught


def test_registry_and_options():
    assert STAGES["quant-dynamic"] is DynamicInt8
    assert [o["name"] for o in describe_stage("quant-dynamic")] == ["protect"]
    with pytest.raises(LiteDiffError):
        DynamicInt8(protect=["everything"])


def test_linear_layers_only_and_honest_mac_share(tiny_unet, ddpm_scheduler):
    table = layer_table(tiny_unet)
    state, caught = quantize(tiny_unet, ddpm_scheduler)
    assert not [w for w in caught if issubclass(w.category, (DeprecationWarning, FutureWarning))
                or "quantiz" in str(w.message)]
    quantized = dynamic_layers(state.unet)
    linear = table[(table["type"] == "Linear") & ~table["name"].str.startswith("time_embedding")]
    assert set(quantized) == set(linear["name"])
    assert type(state.unet.time_embedding.linear_1) is nn.Linear  # protected by default
    assert all(type(m) is nn.Conv2d for m in state.unet.modules() if isinstance(m, nn.Conv2d))
    share = linear["macs"].sum() / table["macs"].sum()
    log = state.log[-1]
    assert log["macs_fraction_int8"] == pytest.approx(share) and 0 < share < 0.5
    assert log["layers"] == len(quantized)
    note = state.notes[-1]
    assert "Linear layers only; convolutions stay fp32" in note and f"{share:.1%}" in note
    out, ref = outputs(state.unet), outputs(tiny_unet)
    assert float((out - ref).norm() / ref.norm()) < 0.05 and not torch.equal(out, ref)
    # packed int8 weights are measured as int8 values + scales: smaller than fp32, same count
    from litediff_core.metrics.size import count_params

    assert model_bytes(state.unet) < model_bytes(tiny_unet)
    assert count_params(state.unet) == count_params(tiny_unet)
    with pytest.raises(LiteDiffError, match="already"):
        DynamicInt8().apply(state)


def test_protect_nothing_converts_time_embedding(tiny_unet, ddpm_scheduler):
    state, _ = quantize(tiny_unet, ddpm_scheduler, protect=[])
    assert "time_embedding.linear_1" in dynamic_layers(state.unet)


def test_save_and_reload_identical_outputs(tiny_unet, ddpm_scheduler, tmp_path):
    state = CompressState.start(tiny_unet, ddpm_scheduler)
    LowRank(rank=2, layers=["linear"]).apply(state)  # quantized low-rank factors
    DynamicInt8().apply(state)
    save_compressed(state, tmp_path / "model", {})
    unet, _, _ = load_compressed(tmp_path / "model")
    assert set(dynamic_layers(unet)) == set(dynamic_layers(state.unet))
    assert torch.equal(outputs(unet), outputs(state.unet))
    assert dynamic_layers(state.unet)  # saving unwrapped a copy

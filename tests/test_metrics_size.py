import json
import struct

import pytest
import torch
import torch.nn as nn

from litediff_core.errors import MetricError
from litediff_core.metrics import (
    count_nonzero,
    count_params,
    layer_table,
    macs_per_image,
    model_bytes,
    size_report,
)


def _toy():
    torch.manual_seed(0)
    # Conv2d(3→8, 3×3): 8·3·9 + 8 = 224 params; Linear(8·4·4 → 5): 640 + 5 = 645 params.
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
                         nn.Flatten(), nn.Linear(128, 5))


def test_counts_on_known_model():
    model = _toy()
    assert count_params(model) == 224 + 645
    assert count_nonzero(model) == 224 + 645
    with torch.no_grad():
        model[0].weight.zero_()          # 216 zeros
        model[4].weight[:2].zero_()      # 2·128 = 256 zeros
    assert count_params(model) == 869
    assert count_nonzero(model) == 869 - 216 - 256


def test_count_nonzero_applies_pruning_masks():
    import torch.nn.utils.prune as prune

    model = _toy()
    prune.l1_unstructured(model[4], "weight", amount=0.5)   # weight_orig + weight_mask
    assert count_params(model) == 869
    assert count_nonzero(model) == 869 - 320


def test_macs_of_single_conv_by_hand():
    conv = nn.Conv2d(3, 8, kernel_size=3, padding=1)
    # each of 8×16×16 outputs takes 3·3·3 multiply-accumulates
    assert macs_per_image(conv, sample_shape=(3, 16, 16)) == 8 * 16 * 16 * 3 * 3 * 3
    lin = nn.Linear(10, 7)
    assert macs_per_image(lin, sample_shape=(1, 1, 10)) == 70


def test_macs_need_shape_for_plain_modules():
    with pytest.raises(MetricError, match="sample_shape"):
        macs_per_image(nn.Conv2d(1, 1, 1))


def test_model_bytes_is_safetensors_size():
    model = _toy()
    n = model_bytes(model)
    header = struct.unpack("<Q", _serialized(model)[:8])[0]
    assert n == 8 + header + 4 * count_params(model)  # fp32, no buffers in this model
    assert 4 * count_params(model) < n < 4 * count_params(model) + 1024


def _serialized(model):
    from safetensors.torch import save

    return save({k: v.contiguous() for k, v in model.state_dict().items()})


def test_model_bytes_half_precision_halves_payload():
    full, half = model_bytes(_toy()), model_bytes(_toy().half())
    assert abs((full - half) - 2 * 869) <= 16  # headers differ by alignment padding at most


def test_unet_layer_table_sums_to_totals(tiny_unet):
    report = size_report(tiny_unet)
    table = layer_table(tiny_unet)
    assert list(table.columns) == ["name", "type", "shape", "params", "nonzeros", "sparsity", "macs"]
    assert table["params"].sum() == report["params"] == count_params(tiny_unet)
    assert table["nonzeros"].sum() == report["nonzero_params"]
    assert table["macs"].sum() == report["macs_per_image"] > 0
    # modules in definition order; attention's own Q·Kᵀ / attention·V MACs are listed
    assert table["name"].iloc[0] == "conv_in"
    assert table["name"].iloc[-1] == "conv_out"
    conv_in = table.set_index("name").loc["conv_in"]
    assert conv_in["shape"] == "8×1×3×3" and conv_in["macs"] == 8 * 16 * 16 * 9
    attn = table[table["type"] == "Attention"]
    assert len(attn) > 0 and (attn["params"] == 0).all() and (attn["macs"] > 0).all()
    assert report["bytes"] > 4 * report["params"]
    json.dumps(report)  # plain ints


def test_attention_macs_match_explicit_matmuls(tiny_unet):
    """The SDPA handle counts what diffusers' non-fused attention computes with bmm/baddbmm."""
    from diffusers.models.attention_processor import Attention, AttnProcessor

    fused = macs_per_image(tiny_unet)
    for m in tiny_unet.modules():
        if isinstance(m, Attention):
            m.set_processor(AttnProcessor())
    assert macs_per_image(tiny_unet) == fused


def test_macs_scale_with_resolution(tiny_unet):
    """Doubling the side: convolutions ×4 (pixels), attention products ×16 (tokens²)."""
    small, large = (layer_table(tiny_unet, resolution=r).set_index("name") for r in (16, 32))
    conv = small["type"] == "Conv2d"
    assert (large.loc[conv, "macs"] == 4 * small.loc[conv, "macs"]).all()
    attn = small["type"] == "Attention"
    assert (large.loc[attn, "macs"] == 16 * small.loc[attn, "macs"]).all()


def test_model_bytes_counts_a_masked_weight_once():
    import torch.nn as nn
    import torch.nn.utils.prune as prune

    from litediff_core.metrics.size import model_bytes

    dense = nn.Linear(64, 64)
    masked = nn.Linear(64, 64)
    prune.l1_unstructured(masked, "weight", amount=0.5)
    assert model_bytes(masked) == model_bytes(dense)

import json

import pytest
import torch
import torch.nn as nn

from litediff_core.compress import (STAGES, CompressState, LowRank, StructuredPrune,
                                    UnstructuredPrune, describe_stage, load_compressed,
                                    make_stage, save_compressed)
from litediff_core.compress import lowrank as lowrank_module
from litediff_core.compress.lowrank import (NOTE, LowRankConv2d, LowRankLinear, factorise,
                                            full_rank, low_rank_layers)
from litediff_core.errors import LiteDiffError
from litediff_core.metrics.size import count_params, layer_table, macs_per_image


def outputs(unet, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((3, 1, 16, 16), generator=g)
    with torch.no_grad():
        return unet(x, torch.tensor([0, 250, 999])).sample


def relative(a, b):
    return float((a - b).norm() / b.norm())


def low_rank(unet, scheduler, **options):
    state = CompressState.start(unet, scheduler)
    return LowRank(**options).apply(state)


# ----------------------------------------------------------------------------- interface

def test_registry_options_and_json_round_trip():
    assert STAGES["low-rank"] is LowRank
    options = {o["name"]: o for o in describe_stage("low-rank")}
    assert options["protect"]["default"] == ["time_embedding", "first_last_conv"]
    assert options["layers"]["choices"] == ["conv", "linear"]
    assert "*not* LoRA" in lowrank_module.__doc__
    stage = LowRank(factor=2, rank=3, layers=["conv"])
    again = make_stage(json.loads(json.dumps(stage.to_dict())))
    assert again.config == stage.config and again.config.layers == ("conv",)


@pytest.mark.parametrize("options", [{"factor": 0.5}, {"rank": -1}, {"min_params_saving": 1.0},
                                     {"layers": ["attention"]}, {"rank": 1.5}])
def test_bad_options_raise(options):
    with pytest.raises(LiteDiffError):
        LowRank(**options)


# ----------------------------------------------------------------------------- one layer

def test_one_conv_layer_params_and_macs_by_hand():
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 32, 3, padding=1)
    new, _ = factorise(conv, 4)
    assert isinstance(new, LowRankConv2d)
    assert (new.in_channels, new.out_channels, new.rank) == (16, 32, 4)
    # dense: 32·16·9 weights + 32 bias; factorised: 4·16·9 + 32·4 weights + 32 bias
    assert count_params(conv) == 4640 and count_params(new) == 576 + 128 + 32
    # MACs on an 8×8 input: weights × 64 output pixels
    assert macs_per_image(conv, sample_shape=(16, 8, 8)) == 4608 * 64
    assert macs_per_image(new, sample_shape=(16, 8, 8)) == (576 + 128) * 64
    x = torch.randn(2, 16, 8, 8)
    assert new(x).shape == conv(x).shape


def test_one_linear_layer_params_by_hand():
    torch.manual_seed(0)
    lin = nn.Linear(64, 48)
    new, _ = factorise(lin, 8)
    assert isinstance(new, LowRankLinear) and (new.in_features, new.out_features) == (64, 48)
    assert count_params(new) == 8 * 64 + 48 * 8 + 48


@pytest.mark.parametrize("layer, shape", [
    (lambda: nn.Conv2d(6, 10, 3, stride=2, padding=1), (4, 6, 9, 9)),
    (lambda: nn.Conv2d(8, 4, 1), (4, 8, 5, 5)),
    (lambda: nn.Linear(12, 20), (4, 3, 12)),
    (lambda: nn.Linear(20, 12, bias=False), (4, 3, 20))])
def test_error_shrinks_with_rank_and_full_rank_is_exact(layer, shape):
    torch.manual_seed(1)
    layer, x = layer(), torch.randn(shape)
    with torch.no_grad():
        ref = layer(x)
        errors, kept = [], []
        for rank in range(1, full_rank(layer) + 1):
            new, k = factorise(layer, rank)
            errors.append(relative(new(x), ref))
            kept.append(k)
    assert all(a > b for a, b in zip(errors, errors[1:]))  # strictly better with each rank
    assert all(a < b for a, b in zip(kept, kept[1:])) and kept[-1] == pytest.approx(1.0)
    with torch.no_grad():
        assert errors[-1] < 1e-5 and float((new(x) - ref).abs().max()) < 1e-5


def test_rank_outside_range_raises():
    with pytest.raises(LiteDiffError):
        factorise(nn.Linear(4, 3), 4)


# ----------------------------------------------------------------------------- the stage

def test_stage_cuts_params_and_macs_as_counted_by_hand(tiny_unet, ddpm_scheduler):
    before, ref = layer_table(tiny_unet).set_index("name"), outputs(tiny_unet)
    state = low_rank(tiny_unet, ddpm_scheduler, factor=4)
    log = state.log[-1]
    rows = log["factorised"]
    assert rows and log["layers"] == len(rows) and NOTE in state.notes
    # each factorised layer: rank = full // 4, weights r·(in·k² + out) instead of out·in·k²
    for row in rows:
        out, fan_in = row["shape"][0], int(torch.tensor(row["shape"][1:]).prod())
        assert row["rank"] == max(1, min(out, fan_in) // 4)
        assert row["weights_before"] == out * fan_in
        assert row["weights_after"] == row["rank"] * (fan_in + out)
        assert 1 - row["weights_after"] / row["weights_before"] >= 0.1
    saved = sum(r["weights_before"] - r["weights_after"] for r in rows)
    assert count_params(tiny_unet) - count_params(state.unet) == saved
    assert log["params_before"] - log["params_after"] == saved
    # fvcore: each layer's MACs fall in the proportion of its weights (same output pixels)
    after = layer_table(state.unet).set_index("name")
    for row in rows:
        n = row["name"]
        new_macs = after.loc[f"{n}.0", "macs"] + after.loc[f"{n}.1", "macs"]
        assert new_macs * row["weights_before"] == before.loc[n, "macs"] * row["weights_after"]
    assert macs_per_image(state.unet) < macs_per_image(tiny_unet)
    assert isinstance(state.unet.get_submodule(rows[0]["name"]), (LowRankConv2d, LowRankLinear))
    assert torch.equal(outputs(tiny_unet), ref)  # the teacher is untouched


def test_protected_layers_and_min_saving(tiny_unet, ddpm_scheduler):
    state = low_rank(tiny_unet, ddpm_scheduler, rank=2, min_params_saving=0.0)
    names = set(low_rank_layers(state.unet))
    assert type(state.unet.conv_in) is nn.Conv2d and type(state.unet.conv_out) is nn.Conv2d
    assert not any(n.startswith("time_embedding") for n in names)
    strict = low_rank(tiny_unet, ddpm_scheduler, rank=2, min_params_saving=0.8)
    assert 0 < len(low_rank_layers(strict.unet)) < len(names)
    none = low_rank(tiny_unet, ddpm_scheduler, factor=1.0, min_params_saving=0.0)  # full rank
    assert not low_rank_layers(none.unet) and "nothing was factorised" in none.notes[-1]
    convs = low_rank(tiny_unet, ddpm_scheduler, rank=2, layers=["conv"], protect=[])
    assert all(isinstance(m, LowRankConv2d) for m in convs.unet.modules()
               if isinstance(m, (LowRankConv2d, LowRankLinear)))
    assert isinstance(convs.unet.conv_in, LowRankConv2d)  # unprotected: 1→8 saves at rank 2
    assert type(convs.unet.conv_out) is nn.Conv2d  # 16→1: rank 1 already, no saving


def test_output_error_shrinks_as_rank_grows(tiny_unet, ddpm_scheduler):
    ref = outputs(tiny_unet)
    # random weights have flat spectra: the whole model is only close to full rank
    errors = [relative(outputs(low_rank(tiny_unet, ddpm_scheduler, factor=f,
                                        min_params_saving=0.0).unet), ref) for f in (2, 1.5, 1.25)]
    assert errors[0] > errors[1] > errors[2] > 0


def test_second_pass_skips_factorised_layers(tiny_unet, ddpm_scheduler):
    state = low_rank(tiny_unet, ddpm_scheduler, factor=2)
    first = low_rank_layers(state.unet)
    LowRank(factor=2).apply(state)
    assert low_rank_layers(state.unet) == first and state.log[-1]["layers"] == 0


# ----------------------------------------------------------------------------- saving

def test_save_and_reload_identical_outputs(tiny_unet, ddpm_scheduler, tmp_path):
    state = low_rank(tiny_unet, ddpm_scheduler, factor=4)
    save_compressed(state, tmp_path / "model", {"dataset": "test"})
    unet, _, meta = load_compressed(tmp_path / "model")
    assert low_rank_layers(unet) == low_rank_layers(state.unet)
    assert torch.equal(outputs(unet), outputs(state.unet))
    assert meta["compression"]["log"][0]["stage"] == "low-rank"


def test_prune_mask_then_low_rank_round_trip(tiny_unet, ddpm_scheduler, tmp_path):
    state = CompressState.start(tiny_unet, ddpm_scheduler)
    StructuredPrune(ratio=0.5, protect=()).apply(state)
    UnstructuredPrune(ratio=0.3).apply(state)
    LowRank(rank=2, layers=["linear"]).apply(state)  # convs keep their masks
    assert low_rank_layers(state.unet)
    save_compressed(state, tmp_path / "model", {})
    unet, _, _ = load_compressed(tmp_path / "model")
    assert torch.equal(outputs(unet), outputs(state.unet))


def test_structured_pruning_refuses_a_factorised_model(tiny_unet, ddpm_scheduler):
    """Reload replays the pruning history on the plain UNet, before the factors: so channel
    pruning must come first in a recipe, and says so."""
    from litediff_core.compress import make_stage

    state = low_rank(tiny_unet, ddpm_scheduler, factor=2)
    with pytest.raises(LiteDiffError, match="already changed by low-rank.*before"):
        make_stage({"stage": "structured-prune", "config": {"ratio": 0.25}}).apply(state)

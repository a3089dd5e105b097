import json

import pytest
import torch
import torch.nn as nn

from litediff_core.compress import (STAGES, CompressState, StructuredPrune, UnstructuredPrune,
                                    describe_stage, make_stage)
from litediff_core.errors import LiteDiffError
from litediff_core.metrics.size import count_params, macs_per_image


@pytest.fixture
def images():
    g = torch.Generator().manual_seed(1)
    return torch.rand(32, 1, 16, 16, generator=g) * 2 - 1


@pytest.fixture
def fashion_unet():
    from diffusers import UNet2DModel

    from litediff_core.models.embedded import fashion_unet_config

    torch.manual_seed(0)
    return UNet2DModel(**fashion_unet_config()).eval()


def prune(unet, scheduler, data=None, **options):
    state = CompressState.start(unet, scheduler, dataset="test", data=data)
    return StructuredPrune(**options).apply(state)


def shapes(module):
    return {n: tuple(p.shape) for n, p in module.named_parameters()}


FAST = dict(batches=2, batch_size=8, timesteps=10)


# ----------------------------------------------------------------------------- interface

def test_registry_describe_and_json_round_trip():
    assert {"structured-prune", "unstructured-prune"} <= set(STAGES)
    options = {o["name"]: o for o in describe_stage("structured-prune")}
    assert options["importance"]["choices"] == ["random", "l1", "l2", "taylor", "diff-pruning"]
    assert options["protect"]["type"] == "list[str]"
    assert options["protect"]["default"] == ["time_embedding"]
    assert options["global_pruning"] == {**options["global_pruning"], "type": "bool",
                                         "default": False}
    assert options["threshold"]["default"] == 0.05
    stage = StructuredPrune(ratio=0.4, importance="taylor", protect=["attention"])
    again = make_stage(json.loads(json.dumps(stage.to_dict())))
    assert isinstance(again, StructuredPrune) and again.config == stage.config
    assert again.config.protect == ("attention",)


@pytest.mark.parametrize("options", [{"ratio": 1.0}, {"ratio": -0.1}, {"ratio": 1.5},
                                     {"importance": "magic"}, {"protect": ["everything"]},
                                     {"colour": "red"}, {"ratio": "half"}, {"threshold": 1.0}])
def test_bad_options_raise(options):
    with pytest.raises(LiteDiffError):
        StructuredPrune(**options)
    with pytest.raises(LiteDiffError):
        make_stage({"stage": "no-such-stage"})


def test_ratio_leaving_no_channels_raises_and_keeps_state(tiny_unet, ddpm_scheduler):
    state = CompressState.start(tiny_unet, ddpm_scheduler)
    before = state.unet
    # tiny_unet has 2 channels per GroupNorm group at level 0: ratio 0.6 keeps int(0.8) = 0
    with pytest.raises(LiteDiffError, match="would remove all"):
        StructuredPrune(ratio=0.6).apply(state)
    assert state.unet is before and shapes(before) == shapes(tiny_unet)
    assert state.pruning_history == [] and state.log == []


def test_zero_ratio_is_a_no_op(tiny_unet, ddpm_scheduler):
    state = prune(tiny_unet, ddpm_scheduler, ratio=0.0)
    assert shapes(state.unet) == shapes(tiny_unet) and state.pruning_history == []


# ----------------------------------------------------------------------------- pruning

def test_params_and_macs_fall_as_one_minus_r_squared(fashion_unet, ddpm_scheduler):
    params0, macs0 = count_params(fashion_unet), macs_per_image(fashion_unet)
    x = torch.randn(2, 1, 28, 28)
    for r in (0.3, 0.5):
        state = prune(fashion_unet, ddpm_scheduler, ratio=r, protect=())
        kept = (1 - r) ** 2
        assert kept - 0.1 < count_params(state.unet) / params0 < kept + 0.1
        assert kept - 0.12 < macs_per_image(state.unet) / macs0 < kept + 0.1
        assert state.log[-1]["params_after"] == count_params(state.unet)
        with torch.no_grad():
            assert state.unet(x, torch.tensor([3, 700])).sample.shape == x.shape


@pytest.mark.parametrize("importance", ["random", "l1", "l2", "taylor", "diff-pruning"])
def test_every_importance_gives_a_consistent_model(tiny_unet, ddpm_scheduler, images,
                                                   importance):
    from diffusers.models.attention_processor import Attention
    from diffusers.models.downsampling import Downsample2D
    from diffusers.models.upsampling import Upsample2D

    state = prune(tiny_unet, ddpm_scheduler, images, ratio=0.5, importance=importance, **FAST)
    unet = state.unet
    assert count_params(unet) < 0.5 * count_params(tiny_unet)
    x = torch.randn(3, 1, 16, 16)
    with torch.no_grad():
        assert unet(x, torch.tensor([0, 400, 999])).sample.shape == x.shape
    assert unet.conv_out.out_channels == 1  # image channels
    assert shapes(unet.time_embedding) == shapes(tiny_unet.time_embedding)  # protected default
    for m in unet.modules():
        if isinstance(m, nn.GroupNorm):
            assert m.num_channels % m.num_groups == 0 and m.weight.shape[0] == m.num_channels
        if isinstance(m, (Downsample2D, Upsample2D)):
            assert (m.channels, m.out_channels) == (m.conv.in_channels, m.conv.out_channels)
        if isinstance(m, Attention):
            assert m.heads == 2 and m.inner_dim == m.to_q.out_features == 8
            assert m.scale == pytest.approx(4 ** -0.5)
    assert all(p.grad is None for p in unet.parameters())
    assert state.pruning_history and json.loads(json.dumps(state.pruning_history))
    assert state.notes and state.log[-1]["stage"] == "structured-prune"


def test_protect_sets(tiny_unet, ddpm_scheduler):
    from diffusers.models.attention_processor import Attention

    def attention_shapes(unet):
        return [shapes(m) for m in unet.modules() if isinstance(m, Attention)]

    free = prune(tiny_unet, ddpm_scheduler, ratio=0.5, protect=()).unet
    assert shapes(free.time_embedding) != shapes(tiny_unet.time_embedding)
    assert attention_shapes(free) != attention_shapes(tiny_unet)
    assert free.conv_in.out_channels < 8 and free.conv_out.in_channels < 8

    kept = prune(tiny_unet, ddpm_scheduler, ratio=0.5,
                 protect=["time_embedding", "attention", "first_last_conv"]).unet
    assert shapes(kept.time_embedding) == shapes(tiny_unet.time_embedding)
    assert attention_shapes(kept) == attention_shapes(tiny_unet)
    assert shapes(kept.conv_in) == shapes(tiny_unet.conv_in)
    assert shapes(kept.conv_out) == shapes(tiny_unet.conv_out)
    assert count_params(kept) < count_params(tiny_unet)  # resnet inner channels still pruned


def test_global_and_layerwise_pruning_differ(fashion_unet, ddpm_scheduler):
    local = prune(fashion_unet, ddpm_scheduler, ratio=0.3).unet
    glob = prune(fashion_unet, ddpm_scheduler, ratio=0.3, global_pruning=True).unet
    assert shapes(local) != shapes(glob)
    widths = {n: m.out_channels for n, m in fashion_unet.named_modules() if n.endswith("conv1")}
    ratios = {round(glob.get_submodule(n).out_channels / c, 3) for n, c in widths.items()}
    assert len(ratios) > 1  # global ranking prunes layers unevenly


def test_gradient_importances_choose_other_channels_than_random(tiny_unet, ddpm_scheduler,
                                                                images):
    def history(importance, seed=0):
        return prune(tiny_unet, ddpm_scheduler, images, ratio=0.5, importance=importance,
                     seed=seed, **FAST).pruning_history

    random0 = history("random")
    assert history("random") == random0  # seeded
    assert history("random", seed=1) != random0
    assert history("taylor") != random0
    assert history("diff-pruning") != random0
    assert history("taylor") == history("taylor")
    assert history("l1") != random0


def test_gradient_importances_need_matching_data(tiny_unet, ddpm_scheduler):
    with pytest.raises(LiteDiffError, match="needs training images"):
        prune(tiny_unet, ddpm_scheduler, None, importance="taylor")
    with pytest.raises(LiteDiffError, match="takes 1×16×16"):
        prune(tiny_unet, ddpm_scheduler, torch.zeros(4, 3, 16, 16), importance="taylor")
    with pytest.raises(LiteDiffError, match=r"\[-1, 1\]"):
        prune(tiny_unet, ddpm_scheduler, torch.full((4, 1, 16, 16), 5.0), importance="taylor")


def test_taylor_accepts_an_image_dataset(tiny_unet, ddpm_scheduler):
    from litediff_core.data import ImageDataset

    g = torch.Generator().manual_seed(0)
    data = ImageDataset("random", torch.randint(0, 256, (20, 1, 16, 16), generator=g,
                                                dtype=torch.uint8))
    state = prune(tiny_unet, ddpm_scheduler, data, ratio=0.3, importance="taylor", **FAST)
    assert state.log[-1]["gradient_batches"] == 2


def test_diff_pruning_threshold_selects_timesteps(tiny_unet, ddpm_scheduler, images,
                                                  monkeypatch):
    import litediff_core.compress.structured as structured

    # a random UNet's loss hardly depends on t: every timestep passes any threshold below 0.9
    state = prune(tiny_unet, ddpm_scheduler, images, ratio=0.3, importance="diff-pruning",
                  **FAST)
    assert state.log[-1]["diff_pruning_timesteps"] == state.log[-1]["timesteps_visited"] == 10

    # a trained model's ε-loss falls with t: mimic it by weighting the loss with (1 - t/T)
    real = structured.noise_prediction_loss
    monkeypatch.setattr(structured, "noise_prediction_loss",
                        lambda unet, s, x0, t, noise: real(unet, s, x0, t, noise)
                        * (1 - t[0].item() / 1000))
    counts = []
    for threshold in (0.0, 0.3, 0.7):
        state = prune(tiny_unet, ddpm_scheduler, images, ratio=0.3, importance="diff-pruning",
                      threshold=threshold, **FAST)
        log = state.log[-1]
        counts.append(log["diff_pruning_timesteps"])
        used = [t for t, _ in log["losses"]][:log["diff_pruning_timesteps"]]
        assert used == sorted(used) and used[0] == 0  # from t = 0 upwards
        assert all(loss >= threshold * log["loss_max"] for _, loss in
                   log["losses"][:log["diff_pruning_timesteps"]])
    assert counts[0] == 10 and counts[0] > counts[1] > counts[2] >= 1
    assert abs(counts[1] - 7) <= 1 and abs(counts[2] - 3) <= 1  # (1 - t/T) > thr, t = 0, 111, ...


def test_successive_prunes_accumulate_history_and_keep_the_teacher(two_group_unet,
                                                                   ddpm_scheduler):
    tiny_unet = two_group_unet
    reference = {n: p.clone() for n, p in tiny_unet.state_dict().items()}
    state = CompressState.start(tiny_unet, ddpm_scheduler)
    StructuredPrune(ratio=0.25, protect=()).apply(state)
    first = len(state.pruning_history)
    StructuredPrune(ratio=0.25, importance="random").apply(state)
    assert len(state.pruning_history) > first and len(state.log) == 2
    assert state.teacher is tiny_unet
    assert all(torch.equal(p, reference[n]) for n, p in tiny_unet.state_dict().items())


def test_structured_after_unstructured_masks_is_refused(tiny_unet, ddpm_scheduler):
    state = CompressState.start(tiny_unet, ddpm_scheduler)
    UnstructuredPrune(ratio=0.5).apply(state)
    with pytest.raises(LiteDiffError, match="masks"):
        StructuredPrune(ratio=0.3).apply(state)

import pytest
import torch
import torch.nn as nn

from litediff_core.compress import (CompressState, UnstructuredPrune, apply_masks,
                                    describe_stage, make_permanent, masks)
from litediff_core.compress.unstructured import NOTE, prunable_layers
from litediff_core.errors import LiteDiffError
from litediff_core.metrics.size import count_nonzero, count_params


@pytest.fixture
def images():
    g = torch.Generator().manual_seed(1)
    return torch.rand(32, 1, 16, 16, generator=g) * 2 - 1


def sparsify(unet, scheduler, data=None, **options):
    state = CompressState.start(unet, scheduler, data=data)
    return UnstructuredPrune(**options).apply(state)


def zeros(mask):
    return int((mask == 0).sum())


FAST = dict(batches=2, batch_size=8)


def test_describe_lists_methods():
    options = {o["name"]: o for o in describe_stage("unstructured-prune")}
    assert options["method"]["choices"] == ["l1", "global", "random", "tiny-diffusion"]
    assert options["ratio"]["type"] == "float"


@pytest.mark.parametrize("options", [{"ratio": 1.0}, {"ratio": -0.5}, {"method": "nope"},
                                     {"method": "tiny-diffusion", "alpha": 0.0, "beta": 0.0},
                                     {"alpha": -1.0}])
def test_bad_options_raise(options):
    with pytest.raises(LiteDiffError):
        UnstructuredPrune(**options)


@pytest.mark.parametrize("method", ["l1", "random"])
def test_layerwise_methods_reach_exact_sparsity_per_layer(tiny_unet, ddpm_scheduler, method):
    state = sparsify(tiny_unet, ddpm_scheduler, ratio=0.4, method=method)
    found = masks(state.unet)
    layers = prunable_layers(state.unet, ("time_embedding",))
    assert set(found) == {f"{n}.weight" for n in layers}
    assert not any(k.startswith("time_embedding.") for k in found)  # protected by default
    for key, mask in found.items():
        assert zeros(mask) == round(0.4 * mask.numel()), key
    assert state.log[-1]["sparsity"] == pytest.approx(0.4, abs=0.01)
    assert count_params(state.unet) == count_params(tiny_unet)  # shapes unchanged
    assert count_nonzero(state.unet) < count_nonzero(tiny_unet)
    assert NOTE in state.notes


def test_l1_zeroes_the_smallest_weights(tiny_unet, ddpm_scheduler):
    state = sparsify(tiny_unet, ddpm_scheduler, ratio=0.5, method="l1")
    w = tiny_unet.down_blocks[0].resnets[0].conv1.weight.abs()
    mask = masks(state.unet)["down_blocks.0.resnets.0.conv1.weight"]
    assert w[~mask].max() <= w[mask].min()


def test_global_reaches_exact_overall_sparsity_and_differs_from_l1(tiny_unet, ddpm_scheduler):
    state = sparsify(tiny_unet, ddpm_scheduler, ratio=0.6, method="global", protect=[])
    found = masks(state.unet)
    total = sum(m.numel() for m in found.values())
    assert sum(zeros(m) for m in found.values()) == round(0.6 * total)
    per_layer = {round(zeros(m) / m.numel(), 2) for m in found.values()}
    assert len(per_layer) > 3  # uneven across layers
    l1 = masks(sparsify(tiny_unet, ddpm_scheduler, ratio=0.6, method="l1", protect=[]).unet)
    assert any(not torch.equal(found[k], l1[k]) for k in found)


def test_masks_persist_through_an_optimizer_step(tiny_unet, ddpm_scheduler, images):
    from litediff_core.compress._common import noise_prediction_loss

    state = sparsify(tiny_unet, ddpm_scheduler, ratio=0.5)
    unet = state.unet.train()
    found = masks(unet)
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-2, weight_decay=0.1)
    for _ in range(2):
        loss = noise_prediction_loss(unet, ddpm_scheduler, images[:8],
                                     torch.randint(1000, (8,)), torch.randn(8, 1, 16, 16))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        unet(images[:2], torch.tensor([1, 2]))  # the pre-forward hook recomputes weights
    for key, mask in found.items():
        weight = unet.get_submodule(key[:-len(".weight")]).weight
        assert torch.all(weight[~mask] == 0), key
        assert torch.any(weight[mask] != 0), key


def test_make_permanent_keeps_outputs(tiny_unet, ddpm_scheduler):
    state = sparsify(tiny_unet, ddpm_scheduler, ratio=0.5, method="random")
    x, t = torch.randn(2, 1, 16, 16), torch.tensor([5, 900])
    with torch.no_grad():
        before = state.unet(x, t).sample
        nonzero = count_nonzero(state.unet)
        make_permanent(state.unet)
        after = state.unet(x, t).sample
    assert torch.equal(before, after)
    assert masks(state.unet) == {}
    assert not any(n.endswith("_orig") for n, _ in state.unet.named_parameters())
    assert count_nonzero(state.unet) == nonzero


def test_tiny_diffusion_with_beta_zero_selects_like_l1(tiny_unet, ddpm_scheduler, images):
    l1 = masks(sparsify(tiny_unet, ddpm_scheduler, ratio=0.5, method="l1").unet)
    for alpha in (1.0, 0.5):
        td = masks(sparsify(tiny_unet, ddpm_scheduler, images, ratio=0.5,
                            method="tiny-diffusion", alpha=alpha, beta=0.0, **FAST).unet)
        assert td.keys() == l1.keys() and all(torch.equal(td[k], l1[k]) for k in l1)
    grad = masks(sparsify(tiny_unet, ddpm_scheduler, images, ratio=0.5, method="tiny-diffusion",
                          alpha=0.0, beta=1.0, **FAST).unet)
    assert any(not torch.equal(grad[k], l1[k]) for k in l1)
    for key, mask in grad.items():
        assert zeros(mask) == round(0.5 * mask.numel())


def test_tiny_diffusion_needs_data(tiny_unet, ddpm_scheduler):
    with pytest.raises(LiteDiffError, match="needs training images"):
        sparsify(tiny_unet, ddpm_scheduler, ratio=0.5, method="tiny-diffusion")


def test_second_stage_keeps_earlier_zeros(tiny_unet, ddpm_scheduler):
    state = CompressState.start(tiny_unet, ddpm_scheduler)
    UnstructuredPrune(ratio=0.3, method="random").apply(state)
    first = masks(state.unet)
    UnstructuredPrune(ratio=0.5, method="l1").apply(state)
    second = masks(state.unet)
    for key, mask in second.items():
        assert zeros(mask) == round(0.5 * mask.numel())
        assert not torch.any(mask & ~first[key])  # nothing regrown
    assert state.teacher is tiny_unet and not masks(tiny_unet)


def test_apply_masks_reapplies_and_replaces(tiny_unet, ddpm_scheduler):
    state = sparsify(tiny_unet, ddpm_scheduler, ratio=0.5)
    found = masks(state.unet)
    fresh = CompressState.start(tiny_unet, ddpm_scheduler).unet
    apply_masks(fresh, found)
    assert all(torch.equal(masks(fresh)[k], v) for k, v in found.items())
    x, t = torch.randn(1, 1, 16, 16), torch.tensor([10])
    with torch.no_grad():
        assert torch.equal(fresh(x, t).sample, state.unet(x, t).sample)
    key = "down_blocks.0.resnets.0.conv1.weight"
    apply_masks(fresh, {key: torch.ones_like(found[key])}, replace=True)  # regrow one layer
    assert masks(fresh)[key].all()
    assert torch.equal(fresh.down_blocks[0].resnets[0].conv1.weight,
                       tiny_unet.down_blocks[0].resnets[0].conv1.weight)
    with pytest.raises(LiteDiffError):
        apply_masks(fresh, {key: torch.ones(3)})


def test_protecting_everything_prunable_is_refused(ddpm_scheduler):
    class Tiny(nn.Module):  # weights, but no Conv2d / Linear to prune
        def __init__(self):
            super().__init__()
            self.norm = nn.GroupNorm(1, 4)

    with pytest.raises(LiteDiffError, match="nothing to prune"):
        UnstructuredPrune().apply(CompressState(unet=Tiny(), scheduler=ddpm_scheduler))

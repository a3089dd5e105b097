import json

import pytest
import torch

from litediff_core.compress import (CompressState, StructuredPrune, UnstructuredPrune,
                                    load_compressed, masks, save_compressed)
from litediff_core.errors import ModelSourceError


def outputs(unet, shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((3, *shape), generator=g)
    with torch.no_grad():
        return unet(x, torch.tensor([0, 250, 999])).sample


def round_trip(state, folder):
    save_compressed(state, folder, {"dataset": "test", "source": "unit test"})
    return load_compressed(folder)


@pytest.mark.parametrize("importance", ["l1", "random", "taylor", "diff-pruning"])
def test_structured_round_trip_is_exact(tiny_unet, ddpm_scheduler, tmp_path, importance):
    data = torch.rand(16, 1, 16, 16) * 2 - 1
    state = CompressState.start(tiny_unet, ddpm_scheduler, dataset="test", data=data)
    StructuredPrune(ratio=0.5, importance=importance, protect=(), batches=1, batch_size=4,
                    timesteps=5).apply(state)
    unet, scheduler, meta = round_trip(state, tmp_path / "model")
    assert torch.equal(outputs(unet, (1, 16, 16)), outputs(state.unet, (1, 16, 16)))
    assert meta["pruning_history"] == state.pruning_history
    assert meta["compression"]["structured"] and meta["compression"]["notes"] == state.notes
    assert meta["dataset"] == "test" and scheduler.config.num_train_timesteps == 1000
    card = json.loads((tmp_path / "model" / "litediff.json").read_text())
    assert card["compression"]["log"][0]["stage"] == "structured-prune"


@pytest.mark.parametrize("ratio", [0.3, 0.5])
def test_embedded_architecture_round_trip(ddpm_scheduler, tmp_path, ratio):
    from diffusers import UNet2DModel
    from diffusers.models.attention_processor import Attention

    from litediff_core.models.embedded import fashion_unet_config

    torch.manual_seed(0)
    base = UNet2DModel(**fashion_unet_config()).eval()
    state = CompressState.start(base, ddpm_scheduler)
    StructuredPrune(ratio=ratio, protect=()).apply(state)
    unet, _, _ = round_trip(state, tmp_path / "model")
    # the forward runs through the patched Downsample2D / Upsample2D / attention
    assert torch.equal(outputs(unet, (1, 28, 28)), outputs(state.unet, (1, 28, 28)))
    for a, b in zip(unet.modules(), state.unet.modules()):
        if isinstance(a, Attention):
            assert (a.heads, a.inner_dim, a.scale) == (b.heads, b.inner_dim, b.scale)
            assert a.to_q.out_features < 128


def test_two_structured_stages_and_masks_round_trip(two_group_unet, ddpm_scheduler, tmp_path):
    state = CompressState.start(two_group_unet, ddpm_scheduler)
    StructuredPrune(ratio=0.25, protect=()).apply(state)
    StructuredPrune(ratio=0.25, importance="random", global_pruning=True).apply(state)
    UnstructuredPrune(ratio=0.5).apply(state)
    unet, _, meta = round_trip(state, tmp_path / "model")
    assert (tmp_path / "model" / "masks.safetensors").exists()
    assert meta["compression"]["unstructured"]
    assert torch.equal(outputs(unet, (1, 16, 16)), outputs(state.unet, (1, 16, 16)))
    saved, live = masks(unet), masks(state.unet)
    assert saved.keys() == live.keys() and all(torch.equal(saved[k], live[k]) for k in live)
    assert masks(state.unet)  # saving folded a copy, not the state's model


def test_prune_save_and_load_work_under_no_grad(tiny_unet, ddpm_scheduler, tmp_path):
    data = torch.rand(8, 1, 16, 16) * 2 - 1
    with torch.no_grad():
        state = CompressState.start(tiny_unet, ddpm_scheduler, data=data)
        StructuredPrune(ratio=0.5, importance="taylor", batches=1, batch_size=4).apply(state)
        unet, _, _ = round_trip(state, tmp_path / "model")
    assert torch.equal(outputs(unet, (1, 16, 16)), outputs(state.unet, (1, 16, 16)))


def test_loading_a_plain_folder_says_what_is_wrong(tiny_unet, ddpm_scheduler, tmp_path):
    from litediff_core.models import save_model

    save_model(tiny_unet, ddpm_scheduler, tmp_path / "plain", {})
    with pytest.raises(ModelSourceError, match="not a compressed"):
        load_compressed(tmp_path / "plain")

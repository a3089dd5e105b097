"""DeepCache (feature caching across sampling steps) on diffusers UNet2DModels."""

import json

import pytest
import torch
from diffusers import UNet2DModel

from litediff_core.compress import CompressState, DeepCache, DeepCacheUNet, load_compressed, \
    save_compressed
from litediff_core.compress.deepcache import cached_step_macs
from litediff_core.errors import LiteDiffError
from litediff_core.metrics import size_report
from litediff_core.models.embedded import ddpm_scheduler_config
from litediff_core.recipes import Recipe
from litediff_core.runs import image_macs, unet_calls
from litediff_core.samplers import generate

THREE_LEVELS = dict(sample_size=16, in_channels=1, out_channels=1, layers_per_block=2,
                    block_out_channels=(8, 16, 16), norm_num_groups=4, attention_head_dim=8,
                    down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
                    up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"))


@pytest.fixture
def three_level_unet():
    torch.manual_seed(0)
    return UNet2DModel(**THREE_LEVELS).eval()


@pytest.mark.parametrize("branch", [0, 1])
def test_a_cached_step_from_the_same_input_is_the_full_step(three_level_unet, branch):
    """The cached (shallow) forward takes exactly the skip samples the full forward gives its
    up blocks: fed the deep feature of the same input, it reproduces the full output."""
    x, t = torch.randn(3, 1, 16, 16), torch.tensor(400)
    wrapped = DeepCacheUNet(three_level_unet, interval=3, branch=branch)
    with torch.no_grad():
        ref = three_level_unet(x, t).sample
        full = wrapped.cached_forward(x, t, full=True)
        shallow = wrapped.cached_forward(x, t, full=False)
    torch.testing.assert_close(full, ref, rtol=0, atol=0)
    torch.testing.assert_close(shallow, ref, rtol=1e-6, atol=1e-6)
    assert cached_step_macs(three_level_unet, branch) < size_report(three_level_unet)[
        "macs_per_image"]


def test_the_whole_unet_runs_every_interval_steps_of_each_batch(three_level_unet):
    calls = []
    three_level_unet.mid_block.register_forward_hook(lambda *a: calls.append(1))
    wrapped = DeepCacheUNet(three_level_unet, interval=3, branch=0)
    cfg = ddpm_scheduler_config()
    cached = generate(wrapped, cfg, "ddim", steps=10, n=4, batch_size=2, seed=1)
    assert len(calls) == 2 * unet_calls(10, 3)[0] == 2 * 4   # steps 0, 3, 6, 9 of each batch
    # batch-size independent (each batch is its own trajectory) and close to the full model
    torch.testing.assert_close(cached, generate(wrapped, cfg, "ddim", steps=10, n=4,
                                                batch_size=4, seed=1), rtol=0, atol=1e-3)
    plain = generate(three_level_unet, cfg, "ddim", steps=10, n=4, seed=1)
    assert (cached - plain).abs().max() > 0   # (closeness is judged on the embedded model)
    # training mode never caches
    calls.clear()
    wrapped.train()
    for _ in range(3):
        wrapped(torch.randn(2, 1, 16, 16), torch.tensor(10))
    assert len(calls) == 3


def test_image_macs_count_full_and_cached_steps(three_level_unet):
    size = DeepCacheUNet(three_level_unet, 3, 0).size_report()
    full, cached = size["macs_per_image"], size["cached_step_macs"]
    assert unet_calls(50, None) == (50, 0) and unet_calls(50, 3) == (17, 33)
    assert image_macs(size, 50, 3) == 17 * full + 33 * cached
    assert image_macs(size_report(three_level_unet), 10) == 10 * full


def test_stage_saves_and_reloads_as_a_cached_model(tmp_path, three_level_unet):
    from diffusers import DDPMScheduler

    sched = DDPMScheduler(**ddpm_scheduler_config())
    state = CompressState.start(three_level_unet, sched)
    state = DeepCache(interval=2, branch=1).apply(state)
    assert isinstance(state.unet, DeepCacheUNet) and "per image" in state.notes[-1]
    save_compressed(state, tmp_path / "m", {"dataset": "fashion-mnist", "resolution": 16,
                                            "channels": 1})
    again, _, _ = load_compressed(tmp_path / "m")
    assert isinstance(again, DeepCacheUNet) and (again.interval, again.branch) == (2, 1)
    cfg = ddpm_scheduler_config()
    torch.testing.assert_close(generate(again, cfg, "ddim", steps=5, n=2, seed=0),
                               generate(state.unet, cfg, "ddim", steps=5, n=2, seed=0))


@pytest.mark.parametrize("options, message", [
    ({"interval": 1}, "interval must be at least 2"),
    ({"interval": 0}, "interval must be at least 2"),
    ({"branch": -1}, "branch must be"),
])
def test_bad_options_are_refused(options, message):
    with pytest.raises(LiteDiffError, match=message):
        DeepCache(**options)


def test_what_the_architecture_cannot_honour_is_refused(three_level_unet, tiny_unet):
    with pytest.raises(LiteDiffError, match="branch must be between 0 and 1"):
        DeepCacheUNet(three_level_unet, 2, 2)      # the deepest level: nothing to cache
    with pytest.raises(LiteDiffError, match="branch must be between 0 and 0"):
        DeepCacheUNet(tiny_unet, 2, 1)
    with pytest.raises(LiteDiffError, match="already cached"):
        DeepCacheUNet(DeepCacheUNet(three_level_unet, 2, 0), 2, 0)
    with pytest.raises(LiteDiffError, match="no PyTorch weights"):
        DeepCacheUNet(torch.nn.Identity(), 2, 0)
    skip = UNet2DModel(sample_size=16, in_channels=3, out_channels=3, layers_per_block=1,
                       block_out_channels=(32, 32), attention_head_dim=8,
                       down_block_types=("SkipDownBlock2D", "AttnSkipDownBlock2D"),
                       up_block_types=("AttnSkipUpBlock2D", "SkipUpBlock2D"))
    with pytest.raises(LiteDiffError, match="skip-connection blocks"):
        DeepCacheUNet(skip, 2, 0)


def test_recipes_put_caching_last_and_below_the_sampling_steps():
    cache = {"stage": "deepcache", "config": {"interval": 5}}
    prune = {"stage": "unstructured-prune", "config": {"ratio": 0.3}}
    assert Recipe(stages=[prune, cache], eval={"steps": 10}).stages[-1]["stage"] == "deepcache"
    with pytest.raises(LiteDiffError, match="put it last"):
        Recipe(stages=[cache, prune])
    with pytest.raises(LiteDiffError, match="below the sampling steps"):
        Recipe(stages=[cache], eval={"steps": 5})
    with pytest.raises(LiteDiffError, match="deepcache.*before"):
        from litediff_core.compress import StructuredPrune
        from diffusers import DDPMScheduler

        torch.manual_seed(0)
        unet = UNet2DModel(**THREE_LEVELS).eval()
        state = DeepCache(interval=2).apply(CompressState.start(
            unet, DDPMScheduler(**ddpm_scheduler_config())))
        StructuredPrune(ratio=0.3).apply(state)
    # keys of recipes without the new sampling options are unchanged (stored runs stay valid)
    old = Recipe(stages=[prune])
    assert "eta" in old.eval and old.key() == Recipe(stages=[prune], eval={"eta": 0.0}).key()
    assert old.key() != Recipe(stages=[prune], eval={"eta": 0.5}).key()
    with pytest.raises(LiteDiffError, match="eta"):
        Recipe(eval={"sampler": "dpm-solver++", "eta": 0.5})
    assert json.loads(json.dumps(Recipe(stages=[cache], eval={"steps": 10}).to_dict()))


def test_options_added_later_leave_stored_keys_valid(monkeypatch):
    """A stage option added after runs were stored is left out of the key at its default."""
    from litediff_core.compress import STAGES

    spec = {"stage": "deepcache", "config": {"interval": 3}}
    key = Recipe(stages=[spec]).key()
    monkeypatch.setattr(STAGES["deepcache"], "added_options", {"branch": 0})
    assert Recipe(stages=[spec]).key() != key          # branch=0 no longer hashed
    assert Recipe(stages=[spec]).key() == Recipe(
        stages=[{"stage": "deepcache", "config": {"interval": 3, "branch": 0}}]).key()
    assert Recipe(stages=[{"stage": "deepcache", "config": {"interval": 3, "branch": 1}}],
                  ).key() != Recipe(stages=[spec]).key()

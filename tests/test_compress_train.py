"""The recovery stages (finetune, distill, lora) and their shared training loop, on the tiny
UNet with 64 smooth synthetic 16×16 images."""

import pytest
import torch
import torch.nn as nn

from litediff_core.compress import (STAGES, CompressState, Distill, FineTune, LoRA,
                                    StructuredPrune, UnstructuredPrune, describe_stage,
                                    load_compressed, make_stage, masks, save_compressed)
from litediff_core.compress._common import noise_prediction_loss
from litediff_core.compress._training import (effective_weights, sparsity,
                                              train_noise_prediction)
from litediff_core.compress.distill import scaled_config
from litediff_core.compress.lora import add_adapters, merge_adapters
from litediff_core.errors import LiteDiffError
from litediff_core.metrics.size import count_params

FAST = dict(batch_size=16, lr=2e-3)


@pytest.fixture
def images():
    """64 smooth 1×16×16 images in [-1, 1] (products of random sinusoids)."""
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 16), torch.linspace(-1, 1, 16), indexing="ij")
    fx, fy = torch.rand(64, 1, 1, 1, generator=g) * 3, torch.rand(64, 1, 1, 1, generator=g) * 3
    phase = torch.rand(64, 1, 1, 1, generator=g) * 6.3
    return (torch.sin(fx * xx + phase) * torch.cos(fy * yy) * 0.9).contiguous()


def held_out_loss(unet, scheduler, images):
    """The noise-prediction loss at fixed timesteps and noise (eval mode, no grad)."""
    g = torch.Generator().manual_seed(123)
    t = torch.randint(1000, (images.shape[0],), generator=g)
    noise = torch.randn(images.shape, generator=g)
    with torch.no_grad():
        return float(noise_prediction_loss(unet.eval(), scheduler, images, t, noise))


def probe(unet, seed=7):
    """Outputs at fixed inputs (3 images, timesteps 0 / 250 / 999)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((3, 1, 16, 16), generator=g)
    with torch.no_grad():
        return unet.eval()(x, torch.tensor([0, 250, 999])).sample


def weights(unet):
    return {k: v.detach().clone() for k, v in unet.state_dict().items()}


def same_weights(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def l1_norm(unet):
    return float(sum(w.detach().abs().sum() for _, w in effective_weights(unet)))


def start(unet, scheduler, images):
    return CompressState.start(unet, scheduler, dataset="test", data=images)


# ----------------------------------------------------------------------------- options

def test_registry_and_options():
    assert {"finetune", "distill", "lora"} <= set(STAGES)
    assert {"structured-prune", "unstructured-prune"} <= set(STAGES)  # kept
    names = {o["name"] for o in describe_stage("finetune")}
    assert {"steps", "lr", "batch_size", "T_0", "ema", "seed", "l1_lambda", "regrowth",
            "regrowth_every"} <= names
    assert {"kd_frac", "fresh", "scale"} <= {o["name"] for o in describe_stage("distill")}
    lora = {o["name"]: o for o in describe_stage("lora")}
    assert lora["layers"]["choices"] == ["conv", "linear"] and "r" in lora and "alpha" in lora
    stage = make_stage(Distill(kd_frac=0.5, steps=3).to_dict())
    assert isinstance(stage, Distill) and stage.config.kd_frac == 0.5


@pytest.mark.parametrize("cls, options", [
    (FineTune, {"steps": 0}), (FineTune, {"lr": 0.0}), (FineTune, {"regrowth": 1.5}),
    (FineTune, {"l1_lambda": -1.0}), (FineTune, {"T_0": -1}), (Distill, {"kd_frac": 1.2}),
    (Distill, {"scale": 3, "fresh": True}), (Distill, {"scale": 2}), (LoRA, {"r": 0}),
    (LoRA, {"layers": ()}), (LoRA, {"layers": ("norm",)})])
def test_bad_options_raise(cls, options):
    with pytest.raises(LiteDiffError):
        cls(**options)


def test_needs_images(tiny_unet, ddpm_scheduler):
    with pytest.raises(LiteDiffError, match="images"):
        FineTune(steps=1).apply(CompressState.start(tiny_unet, ddpm_scheduler))


# ----------------------------------------------------------------------------- finetune

def test_finetune_lowers_the_loss_and_reports_it(tiny_unet, ddpm_scheduler, images):
    before = held_out_loss(tiny_unet, ddpm_scheduler, images)
    reports = []
    state = start(tiny_unet, ddpm_scheduler, images)
    FineTune(steps=30, T_0=10, **FAST).apply(state, lambda d, t, m: reports.append((d, t, m)))
    after = held_out_loss(state.unet, ddpm_scheduler, images)
    assert after < 0.6 * before, (before, after)
    entry = state.log[-1]
    assert entry["stage"] == "finetune" and entry["steps"] == 30 and entry["processes"] == 1
    assert len(entry["losses"]) == 30 and entry["last_loss"] < entry["first_loss"]
    assert [d for d, _, _ in reports] == list(range(1, 31)) and reports[-1][1] == 30
    assert reports[-1][2].startswith("loss ")
    assert float(reports[-1][2].split()[1]) == pytest.approx(entry["last_loss"], abs=1e-4)
    assert same_weights(weights(tiny_unet), weights(state.teacher))  # teacher untouched


def test_same_seed_same_weights(tiny_unet, ddpm_scheduler, images):
    runs = [FineTune(steps=6, ema=ema, seed=s, **FAST).apply(
        start(tiny_unet, ddpm_scheduler, images)).unet
        for s, ema in ((3, True), (3, True), (4, True), (3, False))]
    assert same_weights(weights(runs[0]), weights(runs[1]))
    assert not same_weights(weights(runs[0]), weights(runs[2]))  # another seed
    assert not same_weights(weights(runs[0]), weights(runs[3]))  # the EMA weights


def test_masks_persist_through_finetune(tiny_unet, ddpm_scheduler, images):
    state = start(tiny_unet, ddpm_scheduler, images)
    UnstructuredPrune(ratio=0.5).apply(state)
    found, pruned = masks(state.unet), weights(state.unet)
    FineTune(steps=10, batch_size=16, lr=1e-2).apply(state)
    assert masks(state.unet).keys() == found.keys()
    assert all(torch.equal(masks(state.unet)[k], found[k]) for k in found)
    assert state.log[-1]["sparsity_after"] == state.log[-1]["sparsity_before"] == \
        pytest.approx(0.5, abs=0.01)
    probe(state.unet)  # a forward pass recomputes the masked weights
    for key, mask in found.items():
        layer = state.unet.get_submodule(key[:-len(".weight")])
        assert torch.all(layer.weight[~mask] == 0), key
        assert torch.all((layer.weight_orig * layer.weight_mask)[~mask] == 0), key
    changed = [k for k in found if not torch.equal(weights(state.unet)[k + "_orig"][found[k]],
                                                    pruned[k + "_orig"][found[k]])]
    assert len(changed) == len(found)  # every layer's kept weights trained


def test_l1_lambda_lowers_the_l1_norm(tiny_unet, ddpm_scheduler, images):
    plain = FineTune(steps=10, **FAST).apply(start(tiny_unet, ddpm_scheduler, images)).unet
    sparse = FineTune(steps=10, l1_lambda=1e-3, **FAST).apply(
        start(tiny_unet, ddpm_scheduler, images)).unet
    assert l1_norm(sparse) < 0.9 * l1_norm(plain), (l1_norm(sparse), l1_norm(plain))


def test_regrowth_once_at_the_end(tiny_unet, ddpm_scheduler, images):
    state = start(tiny_unet, ddpm_scheduler, images)
    UnstructuredPrune(ratio=0.6).apply(state)
    found = masks(state.unet)
    FineTune(steps=4, regrowth=0.5, **FAST).apply(state)
    entry = state.log[-1]
    assert entry["sparsity_before"] == pytest.approx(0.6, abs=0.01)
    assert entry["sparsity_after"] == pytest.approx(0.3, abs=0.03)  # 0.6 · (1 − 0.5)
    assert entry["regrowth_events"] == 1 and entry["regrown_weights"] > 0
    assert sparsity(state.unet) == pytest.approx(entry["sparsity_after"])
    original = dict(tiny_unet.named_parameters())
    for key, old in found.items():
        new = masks(state.unet)[key]
        assert torch.all(new[old])  # kept weights stay kept
        grown = new & ~old
        layer = state.unet.get_submodule(key[:-len(".weight")])
        # a regrown weight comes back with its value from before pruning
        assert torch.equal(layer.weight_orig.detach()[grown], original[key].detach()[grown]), key


def test_regrowth_every_k_steps(tiny_unet, ddpm_scheduler, images):
    state = start(tiny_unet, ddpm_scheduler, images)
    UnstructuredPrune(ratio=0.6).apply(state)
    FineTune(steps=6, regrowth=0.5, regrowth_every=2, **FAST).apply(state)
    entry = state.log[-1]
    assert entry["regrowth_events"] == 2  # after steps 2 and 4 (not after the last, 6)
    assert entry["sparsity_after"] == pytest.approx(0.15, abs=0.03)  # 0.6 · 0.5²


# ----------------------------------------------------------------------------- distill

def gap(student, teacher, scheduler, images):
    """Mean squared difference of the two ε-predictions at the same noisy images."""
    g = torch.Generator().manual_seed(5)
    x0 = images[:32]
    t = torch.randint(1000, (32,), generator=g)
    xt = scheduler.add_noise(x0, torch.randn(x0.shape, generator=g), t)
    with torch.no_grad():
        return float(((student.eval()(xt, t).sample - teacher.eval()(xt, t).sample) ** 2).mean())


def test_distillation_pulls_the_student_to_a_trained_teacher(tiny_unet, ddpm_scheduler, images):
    teacher = FineTune(steps=30, **FAST).apply(start(tiny_unet, ddpm_scheduler, images)).unet
    state = start(teacher, ddpm_scheduler, images)
    StructuredPrune(ratio=0.5, protect=()).apply(state)
    pruned = state.unet
    reference = weights(teacher)
    Distill(steps=20, seed=1, **FAST).apply(state)  # kd_frac 0.7
    before, after = (gap(m, teacher, ddpm_scheduler, images) for m in (pruned, state.unet))
    assert after < 0.5 * before, (before, after)
    assert state.log[-1]["stage"] == "distill" and len(state.log[-1]["losses"]) == 20
    assert state.pruning_history  # the pruned student was trained, not replaced
    assert same_weights(weights(teacher), reference)  # teacher untouched


def test_kd_term_follows_the_teacher_not_the_data(tiny_unet, ddpm_scheduler, images):
    """An untrained teacher predicts nothing like ε: kd_frac=1 imitates it, kd_frac=0 not."""
    out = {}
    for kd in (1.0, 0.0):
        state = start(tiny_unet, ddpm_scheduler, images)
        StructuredPrune(ratio=0.5, protect=()).apply(state)
        out["before"] = gap(state.unet, tiny_unet, ddpm_scheduler, images)
        Distill(steps=15, kd_frac=kd, seed=1, **FAST).apply(state)
        out[kd] = gap(state.unet, tiny_unet, ddpm_scheduler, images)
    assert out[1.0] < 0.75 * out["before"] and out[1.0] < 0.5 * out[0.0], out


def test_kd_frac_zero_is_plain_finetuning(tiny_unet, ddpm_scheduler, images):
    class Untouchable(nn.Module):
        def forward(self, *args):
            raise AssertionError("the teacher must not run with kd_frac=0")

    state = start(tiny_unet, ddpm_scheduler, images)
    state.teacher = Untouchable()
    distilled = Distill(steps=5, kd_frac=0.0, **FAST).apply(state).unet
    tuned = FineTune(steps=5, **FAST).apply(start(tiny_unet, ddpm_scheduler, images)).unet
    assert same_weights(weights(distilled), weights(tuned))


def test_attention_maps_compare_blocks_of_any_width():
    from litediff_core.compress._training import attention_map, attention_transfer

    g = torch.Generator().manual_seed(0)
    f = torch.randn(4, 8, 6, 6, generator=g)
    wide = torch.cat([f, f], dim=1)  # the same block with twice the channels
    assert torch.allclose(attention_map(f), attention_map(wide))
    assert torch.allclose(attention_map(f).norm(dim=1), torch.ones(4))
    assert float(attention_transfer({"b": f}, {"b": wide})) == pytest.approx(0.0, abs=1e-6)
    other = torch.randn(4, 3, 6, 6, generator=g)
    d = float(attention_transfer({"b": other}, {"b": f}))
    assert 0.0 < d <= 2.0
    with pytest.raises(LiteDiffError, match="spatial sizes"):
        attention_transfer({"b": torch.randn(4, 3, 3, 3)}, {"b": f})


def block_gap(student, teacher, scheduler, images):
    """The attention-transfer distance of the two models' block outputs at fixed inputs."""
    from litediff_core.compress._training import FeatureTaps, attention_transfer

    g = torch.Generator().manual_seed(5)
    x0, t = images[:32], torch.randint(1000, (32,), generator=g)
    xt = scheduler.add_noise(x0, torch.randn(x0.shape, generator=g), t)
    taps = [FeatureTaps(m) for m in (student, teacher)]
    try:
        with torch.no_grad():
            student.eval()(xt, t), teacher.eval()(xt, t)
        return float(attention_transfer(taps[0].out, taps[1].out))
    finally:
        for tap in taps:
            tap.close()


def hooks(unet) -> int:
    return sum(len(m._forward_hooks) for m in unet.modules())


def test_feature_kd_pulls_the_block_maps_of_a_pruned_student_to_its_teacher(
        tiny_unet, ddpm_scheduler, images):
    teacher = FineTune(steps=30, **FAST).apply(start(tiny_unet, ddpm_scheduler, images)).unet
    out = {}
    for weight in (0.0, 10.0):  # kd_frac 0: only the feature term differs
        state = start(teacher, ddpm_scheduler, images)
        StructuredPrune(ratio=0.5, protect=()).apply(state)
        out["before"] = block_gap(state.unet, teacher, ddpm_scheduler, images)
        Distill(steps=20, kd_frac=0.0, feature_kd=weight, seed=1, **FAST).apply(state)
        out[weight] = block_gap(state.unet, teacher, ddpm_scheduler, images)
        assert hooks(state.unet) == 0 and hooks(teacher) == 0  # removed after training
    assert out[10.0] < 0.5 * out["before"] and out[10.0] < 0.5 * out[0.0], out


def test_feature_kd_off_keeps_stored_keys_and_needs_a_teacher(tiny_unet, ddpm_scheduler, images):
    from litediff_core.recipes import Recipe

    plain = Recipe(base="embedded", stages=[{"stage": "distill", "config": {"steps": 5}}])
    stored = plain.to_dict()
    stored["stages"][0]["config"].pop("feature_kd")  # a recipe stored before the option
    assert Recipe.from_dict(stored).key() == plain.key()
    assert Recipe(base="embedded", stages=[{"stage": "distill", "config": {
        "steps": 5, "feature_kd": 1.0}}]).key() != plain.key()
    with pytest.raises(LiteDiffError, match="feature_kd must be ≥ 0"):
        make_stage({"stage": "distill", "config": {"feature_kd": -1.0}})
    state = start(tiny_unet, ddpm_scheduler, images)
    state.teacher = None
    with pytest.raises(LiteDiffError, match="no teacher"):
        Distill(steps=2, kd_frac=0.0, feature_kd=1.0, **FAST).apply(state)


def test_fresh_student_at_half_width(tiny_unet, ddpm_scheduler, images, tmp_path):
    state = start(tiny_unet, ddpm_scheduler, images)
    StructuredPrune(ratio=0.5, protect=()).apply(state)
    Distill(steps=3, fresh=True, scale=2, lr=1e-3, batch_size=16).apply(state)
    student = state.unet
    assert list(student.config.block_out_channels) == [4, 8]
    assert 0.2 < count_params(student) / count_params(tiny_unet) < 0.3
    assert probe(student).shape == (3, 1, 16, 16)
    assert state.pruning_history == [] and any("fresh student" in n for n in state.notes)
    info = state.log[-1]["fresh_student"]
    assert info["student_params"] == count_params(student)
    # a fresh student's config is its own original: save / load without pruning history
    save_compressed(state, tmp_path / "m", {"source": "test"})
    unet, _, meta = load_compressed(tmp_path / "m")
    assert meta["pruning_history"] == [] and torch.equal(probe(unet), probe(student))


def test_fresh_student_at_quarter_width_runs(tiny_unet, ddpm_scheduler, images):
    state = start(tiny_unet, ddpm_scheduler, images)
    Distill(steps=2, fresh=True, scale=4, batch_size=8).apply(state)
    assert list(state.unet.config.block_out_channels) == [2, 4]
    assert state.unet.config.norm_num_groups == 2  # gcd(4, 2, 4): GroupNorm stays valid
    assert torch.isfinite(probe(state.unet)).all()


def test_scaled_config_keeps_groups_and_heads_valid():
    from litediff_core.models.embedded import fashion_unet_config

    base = fashion_unet_config()  # (32, 64, 128), 8 groups, head dim 32
    half, quarter = scaled_config(base, 2), scaled_config(base, 4)
    assert half["block_out_channels"] == [16, 32, 64] and half["norm_num_groups"] == 8
    assert half["attention_head_dim"] == 16  # 64 / 16 = 4 heads, as 128 / 32 before
    assert quarter["block_out_channels"] == [8, 16, 32] and quarter["norm_num_groups"] == 8
    assert quarter["attention_head_dim"] == 8
    odd = scaled_config({**base, "block_out_channels": (12, 24, 48), "norm_num_groups": 4,
                         "attention_head_dim": 12}, 4)
    assert odd["block_out_channels"] == [3, 6, 12] and odd["norm_num_groups"] == 1
    assert odd["attention_head_dim"] == 3
    with pytest.raises(LiteDiffError, match="divisible"):
        scaled_config({**base, "block_out_channels": (30, 60, 120)}, 4)


# ----------------------------------------------------------------------------- lora

def test_lora_trains_only_the_adapters_then_merges(tiny_unet, ddpm_scheduler, images):
    from peft.tuners.tuners_utils import BaseTunerLayer

    unet = tiny_unet.train()
    shapes = {n: tuple(p.shape) for n, p in unet.named_parameters()}
    base, params = weights(unet), count_params(unet)
    info = add_adapters(unet, r=2, alpha=4.0, seed=0)
    assert info["adapter_params"] > 0 and info["base_params"] == params
    adapter_names = {n for n, p in unet.named_parameters() if p.requires_grad}
    assert adapter_names and all(".lora_" in n for n in adapter_names)
    train_noise_prediction(unet, ddpm_scheduler, images, steps=5, batch_size=8, lr=1e-2)
    loss = noise_prediction_loss(unet, ddpm_scheduler, images[:4], torch.tensor([1, 9, 99, 999]),
                                 torch.randn(4, 1, 16, 16))
    loss.backward()
    graded = {n for n, p in unet.named_parameters() if p.grad is not None}
    assert graded == adapter_names  # only the adapters get gradients
    unet.zero_grad(set_to_none=True)
    with_adapters = probe(unet)
    # base weights unchanged until the merge (peft moved layer x to x.base_layer)
    now = {k.replace(".base_layer.", "."): v for k, v in unet.state_dict().items()
           if ".lora_" not in k}
    assert same_weights(now, base)
    merged = merge_adapters(unet)
    assert merged["layers"] == info["adapter_layers"] and merged["masked_layers"] == 0
    assert {n: tuple(p.shape) for n, p in unet.named_parameters()} == shapes
    assert not any(isinstance(m, BaseTunerLayer) for m in unet.modules())
    assert not any("lora" in n for n in unet.state_dict())
    assert not same_weights(weights(unet), base)
    torch.testing.assert_close(probe(unet), with_adapters, rtol=1e-4, atol=1e-5)


def test_lora_stage_gives_a_plain_model_that_learned(tiny_unet, ddpm_scheduler, images):
    before = held_out_loss(tiny_unet, ddpm_scheduler, images)
    state = start(tiny_unet, ddpm_scheduler, images)
    LoRA(steps=20, r=4, batch_size=16, lr=5e-3, layers=("conv",), kd_frac=0.3).apply(state)
    unet = state.unet
    assert [(n, p.shape) for n, p in unet.named_parameters()] == \
        [(n, p.shape) for n, p in tiny_unet.named_parameters()]
    assert all(p.requires_grad for p in unet.parameters())
    assert type(unet.conv_in) is nn.Conv2d
    assert type(unet.down_blocks[1].attentions[0].to_q) is nn.Linear  # linear: not adapted
    entry = state.log[-1]
    assert entry["stage"] == "lora" and entry["merged_layers"] == entry["adapter_layers"]
    assert entry["adapter_params"] < entry["base_params"]
    assert held_out_loss(unet, ddpm_scheduler, images) < before
    assert any("no extra parameters" in n for n in state.notes)


def test_lora_keeps_masks(tiny_unet, ddpm_scheduler, images):
    state = start(tiny_unet, ddpm_scheduler, images)
    UnstructuredPrune(ratio=0.5).apply(state)
    found = masks(state.unet)
    LoRA(steps=4, batch_size=8).apply(state)
    assert masks(state.unet).keys() == found.keys()
    assert all(torch.equal(masks(state.unet)[k], found[k]) for k in found)
    probe(state.unet)
    for key, mask in found.items():
        assert torch.all(state.unet.get_submodule(key[:-len(".weight")]).weight[~mask] == 0)
    assert state.log[-1]["merged_layers"] > 0


# ----------------------------------------------------------------------------- save / load

@pytest.mark.parametrize("recipe", ["unstructured+finetune", "structured+distill",
                                    "structured+lora", "lora+regrowth"])
def test_round_trip_after_each_stage(tiny_unet, ddpm_scheduler, images, tmp_path, recipe):
    state = start(tiny_unet, ddpm_scheduler, images)
    if recipe == "unstructured+finetune":
        UnstructuredPrune(ratio=0.5).apply(state)
        FineTune(steps=3, ema=True, l1_lambda=1e-4, **FAST).apply(state)
    elif recipe == "structured+distill":
        StructuredPrune(ratio=0.5, protect=()).apply(state)
        Distill(steps=3, **FAST).apply(state)
    elif recipe == "structured+lora":
        StructuredPrune(ratio=0.5, protect=()).apply(state)
        LoRA(steps=3, batch_size=8, kd_frac=0.5).apply(state)
    else:
        UnstructuredPrune(ratio=0.5).apply(state)
        LoRA(steps=2, batch_size=8).apply(state)
        FineTune(steps=2, regrowth=0.3, **FAST).apply(state)
    save_compressed(state, tmp_path / "m", {"source": "test"})
    unet, _, meta = load_compressed(tmp_path / "m")
    assert torch.equal(probe(unet), probe(state.unet))
    assert meta["compression"]["log"][-1]["stage"] == state.log[-1]["stage"]
    assert meta["pruning_history"] == state.pruning_history


def test_one_process_is_exactly_a_plain_loop(tiny_unet, ddpm_scheduler, images):
    """Accelerate on one process adds nothing: a hand-written loop gives the same weights."""
    import torch.nn.functional as F

    from litediff_core.compress._training import step_generator

    steps, batch, lr = 5, 8, 2e-3
    ours = CompressState.start(tiny_unet, ddpm_scheduler, data=images).unet
    train_noise_prediction(ours, ddpm_scheduler, images, steps=steps, batch_size=batch, lr=lr,
                           seed=2, T_0=3, grad_clip=1.0)
    plain = CompressState.start(tiny_unet, ddpm_scheduler, data=images).unet.train()
    opt = torch.optim.Adam(plain.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=3)
    for step in range(steps):
        g = step_generator(2, step)
        x0 = images[torch.randperm(64, generator=g)[:batch]]
        t = torch.randint(1000, (batch,), generator=g)
        noise = torch.randn(x0.shape, generator=g)
        loss = F.mse_loss(plain(ddpm_scheduler.add_noise(x0, noise, t), t).sample, noise)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(plain.parameters()), 1.0)
        opt.step()
        schedule.step()
    assert same_weights(weights(ours), weights(plain))


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction", "sample"])
def test_the_loss_target_follows_the_schedulers_prediction_type(kind):
    from diffusers import DDPMScheduler

    from litediff_core.compress._common import loss_target

    scheduler = DDPMScheduler(num_train_timesteps=100, prediction_type=kind)
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(3, 1, 4, 4, generator=g), torch.randn(3, 1, 4, 4, generator=g)
    t = torch.tensor([0, 50, 99])
    want = {"epsilon": noise, "sample": x0,
            "v_prediction": scheduler.get_velocity(x0, noise, t)}[kind]
    assert torch.equal(loss_target(scheduler, x0, noise, t), want)
    if kind == "v_prediction":  # not the noise: a v-model trained on ε would be wrong
        assert not torch.allclose(want, noise)

"""Structured (channel) pruning of a diffusers UNet2DModel with Torch-Pruning.

Torch-Pruning's dependency graph finds the groups of coupled channels (a conv's outputs, the
GroupNorm after it, every consumer's inputs, skip concatenations, ...); an importance scores
each group's channels, and ``BasePruner.step()`` removes the lowest ``ratio`` of them, layer by
layer (``global_pruning=False``) or ranked across all groups (``global_pruning=True``). Params
and MACs then fall roughly as 1 − (1 − r)². Channels go in steps of the GroupNorm group count
(Torch-Pruning keeps ``int(group_size·(1 − r))`` per group), so small layers can lose more than
``r``: ``state.log`` records the fraction actually removed.

Importances (``IMPORTANCES``, the extension point: add a factory, and a gradient function in
``GRADIENTS`` if it reads ``.grad``):

- ``random``, ``l1``, ``l2``: random scores; group L1 / L2 weight magnitude.
- ``taylor``: first-order Taylor |Σ w·∂L/∂w| per channel
  (``TaylorImportance(multivariable=True)``), L = the noise-prediction MSE averaged over
  ``batches`` batches of ``batch_size`` images, each image at a uniformly random timestep
  with fresh noise.
- ``diff-pruning`` (Fang et al. 2023, "Structural Pruning for Diffusion Models"): Taylor
  importance Σ|w·g| per channel (``TaylorImportance(multivariable=False)``, as in the authors'
  code) with g = Σ_t ∂L_t/∂w accumulated over timesteps. One batch of ``batch_size`` images and
  one noise draw are shared by all timesteps; ``timesteps`` evenly spaced timesteps are visited
  from t = 0 upwards (the authors' code visits all 1000), L_max is the largest loss so far, and
  the walk stops at the first t with L_t < ``threshold`` · L_max, that step excluded: the
  gradient sums the leading run of timesteps with L_t / L_max ≥ T, which is the paper's set
  {t : L_t / L_max > T} when the loss falls with t, as the ε-prediction loss of a trained model
  does (largest near t = 0, small near t = T): the late, near-pure-noise timesteps, whose
  gradients carry little information, are dropped. ``threshold=0`` keeps every visited step. ``state.log`` gets the count
  (``diff_pruning_timesteps``) and the losses seen.

Protection (``protect``): a protected module keeps every weight shape — any channel group that
touches it is skipped, so the channels it shares stay too (protecting ``attention`` keeps the
residual width of the attention levels; ``first_last_conv`` keeps the width ``conv_in`` feeds).
``conv_out``'s output channels (the image channels) are never pruned.

Attention: q/k/v are pruned with ``num_heads`` so every head keeps the same number of dims and
``attn.heads`` stays. Diffusers' SDPA attention divides by sqrt(current head dim), so after a
head dim d shrinks to d' the query weights are multiplied by sqrt(d'/d) (and ``attn.scale`` set
to d'^-1/2): the attention logits keep the original 1/sqrt(d) temperature over the kept dims.
After ``step()`` the stale diffusers attributes are patched (:func:`patch_diffusers_attributes`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional, Tuple

from .._lazy import nn, no_grad, size, torch, torch_prune, tp
from ..errors import LiteDiffError
from ..progress import Progress, report
from ._common import (PROTECT_SETS, accumulate_gradients, all_submodules, eval_mode,
                      image_sampler, noise_prediction_loss, protected_modules)
from ._io_hooks import require_plain_unet
from .base import CompressState, Stage, clone_model, option


# ----------------------------------------------------------------------------- importances

IMPORTANCES = {
    "random": lambda: tp.importance.RandomImportance(),
    "l1": lambda: tp.importance.MagnitudeImportance(p=1),
    "l2": lambda: tp.importance.MagnitudeImportance(p=2),
    "taylor": lambda: tp.importance.TaylorImportance(multivariable=True),
    "diff-pruning": lambda: tp.importance.TaylorImportance(multivariable=False),
}


def taylor_gradients(config, unet, scheduler, draw, generator, progress) -> dict:
    losses = accumulate_gradients(unet, scheduler, draw, config.batches, config.batch_size,
                                  generator, progress, "structured-prune (taylor)")
    return {"gradient_batches": len(losses), "mean_loss": sum(losses) / len(losses)}


def diff_pruning_gradients(config, unet, scheduler, draw, generator, progress) -> dict:
    steps = int(scheduler.config.num_train_timesteps)
    visit = torch.linspace(0, steps - 1, min(config.timesteps, steps)).round().long().unique()
    x0 = draw(config.batch_size, generator)
    noise = torch.randn(x0.shape, generator=generator)
    unet.zero_grad(set_to_none=True)
    loss_max, used, losses = 0.0, [], []
    with torch.enable_grad():
        for i, t in enumerate(visit.tolist()):
            loss = noise_prediction_loss(unet, scheduler, x0, torch.full((x0.shape[0],), t), noise)
            value = float(loss.detach())
            losses.append([t, value])
            loss_max = max(loss_max, value)
            if value < config.threshold * loss_max:
                break
            loss.backward()
            used.append(t)
            report(progress, i + 1, len(visit), f"structured-prune (diff-pruning): t={t}")
    return {"diff_pruning_timesteps": len(used), "timesteps_visited": len(visit),
            "last_timestep": used[-1], "loss_max": loss_max, "losses": losses}


GRADIENTS = {"taylor": taylor_gradients, "diff-pruning": diff_pruning_gradients}


def skip_protected(importance, protected: set):
    """``importance`` (a Torch-Pruning ``Importance``) that gives groups touching a protected
    module no score, so they are not pruned (a class made here: Torch-Pruning is imported only
    when a model is pruned)."""
    class SkipProtected(tp.importance.Importance):
        def __call__(self, group):
            if any(dep.target.module in protected for dep, _ in group):
                return None
            return importance(group)

    return SkipProtected()


# ----------------------------------------------------------------------------- the stage

class StructuredPrune(Stage):
    """Remove whole channels (Torch-Pruning); see the module docstring."""

    name = "structured-prune"
    family = "structured"
    headline = ("importance", "ratio")
    previewable = True

    @dataclass
    class Config:
        ratio: float = option(0.3, "fraction of channels removed from each layer (or overall "
                                   "with global pruning)", low=0.0, high=1.0, open_high=True,
                              widget="slider")
        importance: str = option("l1", "how channels are ranked", IMPORTANCES)
        global_pruning: bool = option(False, "rank channels across all layers instead of "
                                             "within each layer")
        protect: Tuple[str, ...] = option(("time_embedding",), "modules whose weights keep "
                                                               "their shape", PROTECT_SETS)
        batches: int = option(4, "taylor: batches of images for the gradients", low=1)
        batch_size: int = option(32, "taylor / diff-pruning: images per batch", low=1)
        timesteps: int = option(100, "diff-pruning: evenly spaced timesteps visited from t=0 up",
                                low=1)
        threshold: float = option(0.05, "diff-pruning: stop when L_t < threshold · L_max",
                                    low=0.0, high=1.0, open_high=True)
        seed: int = option(0, "seed of random scores, images, timesteps and noise")

    def preview(self, state, notes):
        """Gradient rankings need data: previewed with L1 ranking, which removes the same number
        of channels per layer (global pruning may spread them differently)."""
        c = self.config
        if c.importance in ("taylor", "diff-pruning"):
            notes.append(f"{c.importance} ranking needs data and gradients: predicted with l1 "
                         f"ranking" + (" (global pruning: channel counts may differ)"
                                       if c.global_pruning else " (same channel count per layer)"))
            return type(self)({**asdict(c), "importance": "l1"}).apply(state)
        return self.apply(state)

    def check(self) -> None:
        """Ranges are declared with the options."""

    def transform(self, state: CompressState, progress: Optional[Progress] = None, data=None):
        """Prune a copy of ``state.unet``. ``data`` (else ``state.data``) feeds the gradient
        importances."""
        c = self.config
        require_plain_unet(state.unet, self.name)
        if torch_prune.is_pruned(state.unet):
            raise LiteDiffError(f"{self.name}: the model carries unstructured pruning masks; "
                                f"prune channels first, or fold the masks (make_permanent)")
        unet = clone_model(state.unet)  # state.unet stays intact if anything fails
        params_before = size.count_params(unet)
        history, info = [], {}
        if c.ratio > 0:
            history, info = self._prune(unet, state.scheduler,
                                        data if data is not None else state.data, progress)
        state.pruning_history.extend(history)
        if c.ratio > 0:
            state.note("structured pruning: parameters and MACs fall, but CPU latency does not "
                       "follow MACs one to one — measure it; quality needs fine-tuning")
            if info["channels_removed"] > c.ratio + 0.05:
                state.note(f"structured pruning removed {info['channels_removed']:.0%} of the "
                           f"channels for a ratio of {c.ratio:g}: channels go in steps of the "
                           f"GroupNorm group count, small layers lose more")
        return unet, {"params_before": params_before, "params_after": size.count_params(unet), **info}

    def _prune(self, unet, scheduler, data, progress):
        """Prune ``unet`` in place; returns (JSON-able pruning history, log entries)."""
        c, info = self.config, {}
        protected = all_submodules(protected_modules(unet, c.protect))
        attentions = _attentions(unet)
        head_dims = {a: a.to_q.out_features // a.heads for a in attentions}
        channels_before = _channels(unet, protected)
        generator = torch.Generator().manual_seed(c.seed)
        with eval_mode(unet), torch.random.fork_rng(devices=[]), torch.enable_grad():
            torch.manual_seed(c.seed)  # random importance and the tracing input
            if c.importance in GRADIENTS:
                draw = image_sampler(data, unet, f"{self.name} ({c.importance})")
                info = GRADIENTS[c.importance](c, unet, scheduler, draw, generator, progress)
            pruner = tp.pruner.BasePruner(
                unet, example_inputs(unet),
                importance=skip_protected(IMPORTANCES[c.importance](), protected),
                pruning_ratio=c.ratio, global_pruning=c.global_pruning,
                ignored_layers=[unet.conv_out],  # its outputs are the image channels
                num_heads={lin: a.heads for a in attentions for lin in (a.to_q, a.to_k, a.to_v)})
            self._refuse_emptied_layers(pruner.DG)
            pruner.step()
        unet.zero_grad(set_to_none=True)
        patch_diffusers_attributes(unet)
        keep_attention_temperature(unet, head_dims)
        report(progress, 1, 1, f"{self.name}: done")
        info["channels_removed"] = 1.0 - _channels(unet, protected) / channels_before
        history = [[str(n), bool(out), [int(i) for i in idx]]
                   for n, out, idx in pruner.pruning_history()]
        return history, info

    def _refuse_emptied_layers(self, graph) -> None:
        """Torch-Pruning silently skips a group that would remove every channel of a layer;
        make that an error instead (the model is a copy: the state is left intact)."""
        check = graph.check_pruning_group

        def strict(group) -> bool:
            if check(group):
                return True
            for dep, idxs in group:
                out = graph.is_out_channel_pruning_fn(dep.handler)
                module = dep.target.module
                channels = graph.get_out_channels(module) if out else graph.get_in_channels(module)
                if channels is not None and channels <= len(idxs):
                    how = "overall" if self.config.global_pruning else "per layer"
                    raise LiteDiffError(
                        f"{self.name}: ratio {self.config.ratio:g} ({how}) would remove all "
                        f"{channels} channels of "
                        f"{graph._module2name.get(module, type(module).__name__)}; use a smaller "
                        f"ratio" + (" or layer-wise pruning" if self.config.global_pruning else ""))
            return False

        graph.check_pruning_group = strict


# ----------------------------------------------------------------------------- helpers

def example_inputs(unet) -> dict:
    """One sample and one timestep for tracing ``unet`` (shapes from its config)."""
    side = unet.config.sample_size
    h, w = (side, side) if isinstance(side, int) else tuple(side)
    device = next(unet.parameters()).device
    return {"sample": torch.randn(1, int(unet.config.in_channels), h, w, device=device),
            "timestep": torch.ones((1,), dtype=torch.long, device=device)}


def _attentions(unet):
    from diffusers.models.attention_processor import Attention

    return [m for m in unet.modules() if isinstance(m, Attention)]


def _channels(unet, protected) -> int:
    """Output channels of the prunable Conv2d / Linear layers (not protected, not conv_out)."""
    return sum(m.weight.shape[0] for m in unet.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear)) and m not in protected
               and m is not unet.conv_out)


def patch_diffusers_attributes(unet) -> None:
    """Make diffusers' cached sizes agree with the (pruned) weights: Downsample2D/Upsample2D
    ``channels``/``out_channels`` (asserted in ``forward``), ResnetBlock2D ``in_channels``/
    ``out_channels``, Attention ``inner_dim``/``inner_kv_dim``/``query_dim``/``out_dim`` and
    ``scale`` (from the current head dim; ``heads`` is unchanged)."""
    from diffusers.models.downsampling import Downsample2D
    from diffusers.models.resnet import ResnetBlock2D
    from diffusers.models.upsampling import Upsample2D

    for m in unet.modules():
        if isinstance(m, (Downsample2D, Upsample2D)):
            conv = getattr(m, "conv", None) or getattr(m, "Conv2d_0", None)
            if isinstance(conv, (nn.Conv2d, nn.ConvTranspose2d)):
                m.channels = conv.in_channels
                m.out_channels = conv.out_channels
        elif isinstance(m, ResnetBlock2D):
            m.in_channels = m.conv1.in_channels
            m.out_channels = m.conv2.out_channels
    for a in _attentions(unet):
        a.inner_dim = a.to_q.out_features
        a.inner_kv_dim = a.to_k.out_features
        a.query_dim = a.to_q.in_features
        a.out_dim = a.to_out[0].out_features
        if a.scale_qk:
            a.scale = (a.inner_dim // a.heads) ** -0.5


@no_grad
def keep_attention_temperature(unet, head_dims_before: dict) -> None:
    """Scale each attention's query by sqrt(d'/d) where its head dim went from d to d'."""
    for a, before in head_dims_before.items():
        after = a.to_q.out_features // a.heads
        if after != before and a.scale_qk:
            factor = math.sqrt(after / before)
            a.to_q.weight.mul_(factor)
            if a.to_q.bias is not None:
                a.to_q.bias.mul_(factor)

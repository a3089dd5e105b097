"""Knowledge distillation: the student learns from the teacher's noise predictions.

Loss per step (shared loop of ``_training.py``: Adam, cosine warm restarts, optional EMA,
Accelerate data parallel)::

    (1 − kd_frac) · MSE(ε, ε_student) + kd_frac · MSE(ε_teacher, ε_student)
        + feature_kd · AT(student blocks, teacher blocks)

AT, the optional feature term (off by default), matches intermediate block outputs as BK-SDM
does, but through attention maps (the channel mean of each down / mid / up block's squared
output, unit length per image; Zagoruyko & Komodakis' attention transfer), so a pruned or
narrower student whose blocks have fewer channels than the teacher's is compared directly,
without learned projections.

where the teacher (``state.teacher``, the untouched base UNet: eval mode, no gradients, never
modified) and the student see the same noisy images x_t and timesteps t. (With another
``prediction_type`` ε stands for its target.) ``kd_frac=0`` is plain fine-tuning (the teacher
is not run); ``kd_frac=1`` learns from the teacher alone.

The student is the current ``state.unet`` (e.g. pruned; its masks persist), or with
``fresh=True`` a newly, randomly initialised (seeded) UNet of the teacher's architecture with
every ``block_out_channels`` divided by ``scale`` (1, 2 or 4; ``time_embedding_dim`` too when
it is set), see :func:`scaled_config`: params fall to about 1/scale². A fresh student replaces
the state's model, so the state's pruning history is cleared (the student was never pruned)
and its config is its own original config (``save_compressed`` / ``load_compressed`` rebuild
it from that config). A fresh student needs many steps and a larger ``lr`` (e.g. 1e-3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from .._lazy import size, torch
from ..errors import LiteDiffError
from ..progress import Progress
from ._training import (TrainingOptions, TrainingStage, teacher_term,
                        loop_options, recovery_kwargs, train_noise_prediction, training_data,
                        training_entry)
from ._io_hooks import require_torch_weights
from .base import CompressState, clone_model, option
from .io import _plain

SCALES = (1, 2, 4)


class Distill(TrainingStage):
    """Knowledge distillation from ``state.teacher``; see the module docstring."""

    name = "distill"
    family = "kd"
    headline = ("scale", "steps")

    @dataclass
    class Config(TrainingOptions):
        lr: float = option(2e-4, "peak learning rate (Adam); a fresh student wants ~1e-3",
                           low=0.0, open_low=True)
        seed: int = option(0, "seed of the fresh student, images, timesteps and noise")
        kd_frac: float = option(0.7, "weight of the teacher term; 1 − kd_frac weighs the true "
                                     "noise", low=0.0, high=1.0, widget="slider")
        fresh: bool = option(False, "distill into a new, randomly initialised student instead "
                                    "of the current model")
        scale: int = option(1, "fresh student: divide every block's channels by 1, 2 or 4",
                             low=1, high=4)
        feature_kd: float = option(0.0, "weight of the feature term: each down / mid / up "
                                        "block's attention map matched to the teacher's (any "
                                        "channel width; 0: off)", low=0.0)

    added_options = {**TrainingStage.added_options, "feature_kd": 0.0}

    def can_preview(self) -> bool:
        """A fresh student's size is known before training (distilling into the current model
        keeps its size, known only after the run)."""
        return self.config.fresh

    def preview(self, state, notes):
        """The fresh student, built with random weights."""
        student, _ = fresh_student(state.teacher if state.teacher is not None else state.unet,
                                   self.config.scale, self.config.seed)
        notes.append(f"distill: a fresh student with 1/{self.config.scale} of the channels "
                     f"replaces the model")
        state.unet, state.pruning_history = student, []
        return state

    def check(self) -> None:
        super().check()
        c = self.config
        if c.scale not in SCALES:
            raise LiteDiffError(f"{self.name}: scale must be one of 1, 2, 4, not {c.scale}")
        if c.scale != 1 and not c.fresh:
            raise LiteDiffError(f"{self.name}: scale {c.scale} makes a new student: set "
                                f"fresh=true (the current model cannot be rescaled)")

    def transform(self, state: CompressState, progress: Optional[Progress] = None, data=None):
        """Distill into a copy of ``state.unet`` (or a fresh student). ``data`` (else
        ``state.data``, else the state's dataset) gives the images."""
        c = self.config
        teacher = state.teacher
        if teacher is None and (c.kd_frac > 0 or c.fresh or c.feature_kd > 0):
            raise LiteDiffError(f"{self.name}: the state has no teacher (start the state with "
                                f"CompressState.start, or set kd_frac=0, feature_kd=0 and "
                                f"fresh=false)")
        if not c.fresh:
            require_torch_weights(state.unet, self.name)
        data = training_data(state, data, self.name)
        info = {}
        if c.fresh:
            student, info = fresh_student(teacher, c.scale, c.seed)
            student.to(next(teacher.parameters()).device).train(True)
        else:
            student = clone_model(state.unet)
        recovery = recovery_kwargs(self, state)
        with teacher_term(teacher, c.kd_frac, student, c.feature_kd) as term:
            result = train_noise_prediction(
                student, state.scheduler, data, **loop_options(c), task_weight=1.0 - c.kd_frac,
                extra_loss=term, progress=progress, who=self.name, **recovery)
        if c.fresh:
            if state.pruning_history:
                state.note("distill: a fresh student replaced the pruned model; the pruning "
                           "history no longer applies and was cleared")
            state.pruning_history = []
        return student, {**training_entry(self, result, recovery),
                         "params": size.count_params(student), **info}


def scaled_config(config, scale: int) -> dict:
    """The UNet2DModel config of ``config`` with every ``block_out_channels`` divided by
    ``scale`` (and ``time_embedding_dim`` if set), kept valid:

    - ``norm_num_groups`` (and ``attn_norm_num_groups`` if set) become their gcd with every new
      channel count, so every GroupNorm (also over the up path's concatenations, sums of those
      counts) still divides its channels;
    - ``attention_head_dim`` (if set) is divided by ``scale`` when it divides evenly, which
      keeps the number of heads, then reduced to its gcd with the new channel counts so every
      attention layer still splits into whole heads.
    """
    cfg = {k: v for k, v in _plain(dict(config)).items() if not k.startswith("_")}
    old = [int(ch) for ch in cfg["block_out_channels"]]
    bad = [ch for ch in old if ch % scale]
    if bad:
        raise LiteDiffError(f"distill: block_out_channels {old} are not all divisible by "
                            f"{scale}")
    new = [ch // scale for ch in old]
    cfg["block_out_channels"] = new
    if cfg.get("time_embedding_dim"):
        cfg["time_embedding_dim"] = max(1, int(cfg["time_embedding_dim"]) // scale)
    for key in ("norm_num_groups", "attn_norm_num_groups"):
        if cfg.get(key):
            cfg[key] = math.gcd(int(cfg[key]), *new)
    head = cfg.get("attention_head_dim")
    if head:
        head = int(head)
        head = head // scale if head % scale == 0 else head
        cfg["attention_head_dim"] = math.gcd(head, *new)
    return cfg


def fresh_student(teacher, scale: int, seed: int):
    """A randomly initialised (seeded) UNet2DModel of ``teacher``'s config scaled down by
    ``scale``; returns (model, log info)."""
    from diffusers import UNet2DModel

    cfg = scaled_config(teacher.config, scale)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        student = UNet2DModel.from_config(cfg)
    old = dict(teacher.config)
    info = {"fresh_student": {"scale": scale, "block_out_channels": list(cfg["block_out_channels"]),
                              "norm_num_groups": cfg.get("norm_num_groups"),
                              "attention_head_dim": cfg.get("attention_head_dim"),
                              "teacher_block_out_channels": list(old["block_out_channels"]),
                              "teacher_norm_num_groups": old.get("norm_num_groups"),
                              "teacher_attention_head_dim": old.get("attention_head_dim"),
                              "teacher_params": size.count_params(teacher),
                              "student_params": size.count_params(student)}}
    return student, info

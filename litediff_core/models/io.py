"""Saving models: diffusers DDPMPipeline folders (safetensors) plus ``litediff.json`` metadata.

Layout (loadable by ``diffusers.DDPMPipeline.from_pretrained`` too)::

    folder/model_index.json
    folder/unet/config.json, diffusion_pytorch_model.safetensors
    folder/scheduler/scheduler_config.json
    folder/litediff.json          # dataset, resolution, channels, training, library version

Writes go to a temporary folder renamed into place, so a reader never sees half a model.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..fileio import atomic_dir
from .. import __version__

META_FILE = "litediff.json"


def save_model(unet, scheduler, folder, meta: dict) -> Path:
    from diffusers import DDPMPipeline

    folder = Path(folder)
    with atomic_dir(folder) as tmp:
        DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(str(tmp),
                                                                     safe_serialization=True)
        (tmp / META_FILE).write_text(json.dumps({**meta, "litediff_version": __version__},
                                                indent=2, ensure_ascii=False))
    return folder

"""Metrics: size (params, bytes, MACs), real speed, sample quality (FID/KID/precision-recall via
torch-fidelity) and teacher–student consistency.

Size, speed and consistency are imported with the package; the quality metrics (``fidelity``,
the feature extractors) on first use: torch-fidelity imports torchvision, which imports
``torch._dynamo`` (about 2.5 s), and the compression stages, which measure size, never need it.
"""

import importlib

from .consistency import eps_mse_by_timestep, ssim_psnr
from .size import count_nonzero, count_params, layer_table, macs_per_image, model_bytes, size_report
from .speed import sampling_throughput, step_latency

_LAZY = {  # name → the submodule that defines it (imported when the name is first read)
    "fidelity": "_fidelity", "FidelityResult": "_fidelity",
    "FashionFeatureExtractor": "extractor", "FMNIST_EXTRACTOR": "extractor",
    "INCEPTION_EXTRACTOR": "extractor", "inception_weights": "extractor",
}


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "count_params", "count_nonzero", "model_bytes", "macs_per_image", "layer_table", "size_report",
    "step_latency", "sampling_throughput",
    "FashionFeatureExtractor", "FMNIST_EXTRACTOR", "INCEPTION_EXTRACTOR", "inception_weights",
    "fidelity", "FidelityResult",
    "ssim_psnr", "eps_mse_by_timestep",
]

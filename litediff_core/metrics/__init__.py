"""Metrics: size (params, bytes, MACs), real speed, sample quality (FID/KID/precision-recall via
torch-fidelity) and teacher–student consistency.

Imported eagerly: ``fidelity`` is both a submodule and its entry point, and importing the function
here keeps ``litediff_core.metrics.fidelity`` the function whatever was imported first.
"""

from .consistency import eps_mse_by_timestep, ssim_psnr
from .extractor import (
    FMNIST_EXTRACTOR,
    INCEPTION_EXTRACTOR,
    FashionFeatureExtractor,
    inception_weights,
)
from .fidelity import FidelityResult, fidelity
from .size import count_nonzero, count_params, layer_table, macs_per_image, model_bytes, size_report
from .speed import sampling_throughput, step_latency

__all__ = [
    "count_params", "count_nonzero", "model_bytes", "macs_per_image", "layer_table", "size_report",
    "step_latency", "sampling_throughput",
    "FashionFeatureExtractor", "FMNIST_EXTRACTOR", "INCEPTION_EXTRACTOR", "inception_weights",
    "fidelity", "FidelityResult",
    "ssim_psnr", "eps_mse_by_timestep",
]

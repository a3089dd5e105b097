"""FID, KID and precision/recall of generated images against a reference set, in one call.

The numbers are torch-fidelity's: features come from ``get_featuresdict_from_dataset`` with a
feature extractor built by ``create_feature_extractor`` (see :mod:`.extractor`), and the metrics
from ``fid_features_to_statistics`` / ``fid_statistics_to_metric``, ``kid_features_to_metric``
and ``prc_features_to_metric`` — exactly the functions ``calculate_metrics`` chains (a test
checks that both agree). We call them one by one, instead of ``calculate_metrics``, for two
reasons:

* the reference features are cached by *everything* that determines them (torch-fidelity's own
  cache is keyed by the names given to it, and it reloads with ``torch.load(weights_only=False)``,
  i.e. unpickling, which this project avoids);
* the generated features are reused for a bootstrap interval of FID.

Cache: ``cache_dir()/fidelity/<reference>-<extractor>-<key>.safetensors``, where ``key`` is a
SHA-256 of a JSON description: reference name, split, requested size, image count and shape, a
SHA-256 of the reference uint8 bytes, extractor name (carrying a version), torch-fidelity
version, a SHA-256 of the extractor weights and the feature layers. The file holds the reference
features and their FID statistics (mean, covariance); the JSON is in its metadata and is checked
on load. Files are written to a temporary name and renamed (atomic). Batch size and device are not
part of the key: they change features only by float rounding.

The bootstrap interval resamples the *generated* features with replacement and recomputes FID
against the fixed reference statistics. Resampling with replacement adds its own upward bias
(duplicated samples), large next to the spread when FID is small: the raw 2.5–97.5 % percentiles
then lie entirely above the point estimate (seen with 200 and 1000 samples). We therefore report
the percentiles shifted by the bootstrap bias (mean of the bootstrap FIDs − FID), i.e. centred on
the estimate, floored at 0, and keep the shift in ``fid_bootstrap_bias``. The interval shows how
much FID moves with the generated sample; it does not remove FID's own bias at small sample
counts (FID falls as the sample count grows: compare models at equal counts).

The resamples are computed in batches (:func:`bootstrap_fids`: one eigendecomposition of the
reference covariance, then singular values of each centred resample), single-threaded: 200
resamples of 200 × 128-d features take about a second on a 2-core CPU, where the former loop of
torch-fidelity's non-symmetric eigenproblems took ~40 s on a busy machine (minutes in the
dashboard); the FIDs agree with it to ~1e-7 relative for the same seed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple, Union

import numpy as np
import torch
import torch_fidelity
from safetensors import safe_open
from safetensors.torch import load_file, save as safetensors_save
from torch_fidelity.metric_fid import (
    KEY_METRIC_FID,
    fid_features_to_statistics,
    fid_statistics_to_metric,
)
from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric
from torch_fidelity.metric_prc import (
    KEY_METRIC_F_SCORE,
    KEY_METRIC_PRECISION,
    KEY_METRIC_RECALL,
    prc_features_to_metric,
)
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY
from torch_fidelity.utils import create_feature_extractor, get_featuresdict_from_dataset

from ..data.datasets import ImageDataset, cache_dir, load_dataset
from ..errors import MetricError
from ..progress import Progress, report
from .extractor import (
    INCEPTION_EXTRACTOR,
    extractor_for,
    extractor_kwargs,
    weights_fingerprint,
)

MIN_SAMPLES = 10
KID_SUBSET_SIZE = 1000
PRC_NEIGHBORHOOD = 3
PRC_BATCH_SIZE = 1000  # distance matrices in 1000-row slices: memory O(1000 × n), same result
BOOTSTRAP_DEFAULT = 200
BOOTSTRAP_DEFAULT_HIGH_DIM = 20  # each 2048-d resample still costs a second or more on a CPU
REFERENCE_SUBSET_SEED = 0

Images = Union[torch.Tensor, ImageDataset]


# ----------------------------------------------------------------------------- result

@dataclass
class FidelityResult:
    fid: float
    fid_ci95: Tuple[float, float]  # bootstrap 2.5–97.5 % of FID, re-centred on ``fid``
    kid_mean: float
    kid_std: float
    precision: float
    recall: float
    f_score: float
    n_generated: int
    n_reference: int
    extractor: str
    reference_name: str = ""
    kid_subset_size: int = 0
    bootstrap: int = 0
    seed: int = 0
    fid_bootstrap_bias: float = 0.0  # mean bootstrap FID − fid (what the re-centring removed)
    reference_from_cache: bool = False
    setup: Dict[str, Any] = field(default_factory=dict)  # filled by the caller: sampler, steps, …

    def to_dict(self) -> dict:
        d = asdict(self)
        d["fid_ci95"] = list(self.fid_ci95)
        return d

    def label(self) -> str:
        """E.g. ``FID 12.3 [11.8, 12.9] (1000 samples, DDIM 50 steps, litediff-fmnist-cnn-v1 features)``."""
        parts = [f"{self.n_generated} samples"]
        sampler, steps = self.setup.get("sampler"), self.setup.get("steps")
        if sampler or steps:
            parts.append(" ".join(str(p) for p in (sampler, f"{steps} steps" if steps else None) if p))
        if self.setup.get("eta"):
            parts.append(f"η={self.setup['eta']:g}")
        if self.setup.get("cache_interval"):
            parts.append(f"DeepCache every {self.setup['cache_interval']} steps")
        parts.append(f"{self.extractor} features")
        lo, hi = self.fid_ci95
        ci = f" [{_fmt(lo)}, {_fmt(hi)}]" if self.bootstrap else ""
        return f"FID {_fmt(self.fid)}{ci} ({', '.join(parts)})"


def _fmt(x: float) -> str:
    return f"{x:.1f}" if abs(x) >= 10 else f"{x:.3g}"


# ----------------------------------------------------------------------------- inputs

class Uint8Images(torch.utils.data.Dataset):
    """In-memory uint8 N×C×H×W images as torch-fidelity reads them: item i is uint8 C×H×W
    (1-channel images repeated to RGB when ``rgb``, for Inception)."""

    def __init__(self, images: torch.Tensor, rgb: bool = False):
        self.images = images
        self.rgb = rgb

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i):
        x = self.images[i]
        return x.expand(3, -1, -1).contiguous() if self.rgb and x.shape[0] == 1 else x


def _as_uint8(images: Images, what: str) -> torch.Tensor:
    x = images.uint8 if isinstance(images, ImageDataset) else images
    if not isinstance(x, torch.Tensor) or x.dtype != torch.uint8 or x.dim() != 4:
        desc = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise MetricError(f"{what}: expected uint8 N×C×H×W images, got {desc} "
                          f"(litediff_core.data.datasets.to_uint8 converts [-1, 1] floats)")
    return x.cpu().contiguous()


def _reference_images(reference, split: str, size: Optional[int], name: Optional[str]):
    """(uint8 images, name): a dataset name is loaded, a subset of ``size`` images is drawn with
    a fixed seed (the same images every call)."""
    if isinstance(reference, str):
        name = name or reference
        reference = load_dataset(reference, split=split)
    if name is None:
        name = reference.name if isinstance(reference, ImageDataset) else "reference"
    images = _as_uint8(reference, f"reference {name!r}")
    if size is not None and size < images.shape[0]:
        g = torch.Generator().manual_seed(REFERENCE_SUBSET_SEED)
        images = images[torch.randperm(images.shape[0], generator=g)[:size].sort().values]
    return images.contiguous(), name


# ----------------------------------------------------------------------------- features

def _extract(feat_extractor, images: torch.Tensor, rgb: bool, batch_size: int, cuda: bool,
             progress: Optional[Progress], done: int, total: int, message: str) -> Dict[str, torch.Tensor]:
    """torch-fidelity features of ``images``, one batch at a time so that progress is reported."""
    parts = []
    for start in range(0, images.shape[0], batch_size):
        batch = Uint8Images(images[start:start + batch_size], rgb)
        parts.append(get_featuresdict_from_dataset(batch, feat_extractor, batch_size, cuda,
                                                   save_cpu_ram=True, verbose=False))
        report(progress, done + start + len(batch), total, message)
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


@torch.no_grad()
def _feature_dim(feat_extractor, layer: str, one_image: torch.Tensor, rgb: bool, cuda: bool) -> int:
    x = Uint8Images(one_image, rgb)[0].unsqueeze(0)
    out = feat_extractor.convert_features_tuple_to_dict(feat_extractor(x.cuda() if cuda else x))
    return out[layer].shape[1]


def _sha256(t: torch.Tensor) -> str:
    return hashlib.sha256(t.numpy().tobytes()).hexdigest()


def reference_cache_key(name: str, split: str, size: Optional[int], images: torch.Tensor,
                        extractor: str, weights_sha256: str, layers) -> dict:
    """Everything that determines the reference features (see the module docstring)."""
    return {
        "reference": name,
        "split": split,
        "size": size,
        "n": int(images.shape[0]),
        "shape": list(images.shape[1:]),
        "images_sha256": _sha256(images),
        "extractor": extractor,
        "torch_fidelity": torch_fidelity.__version__,
        "extractor_weights_sha256": weights_sha256,
        "layers": sorted(layers),
    }


def _cache_path(key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", key["reference"]).strip("_")[-48:] or "reference"
    return cache_dir() / "fidelity" / f"{slug}-{key['extractor']}-{digest}.safetensors"


def _load_cached(path: Path, key: dict):
    """(features dict, FID statistics) from the cache, or None when absent, stale or unreadable."""
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            if json.loads((f.metadata() or {}).get("key", "null")) != key:
                return None
        tensors = load_file(str(path))
        features = {k[len("features."):]: v for k, v in tensors.items() if k.startswith("features.")}
        stats = {"mu": tensors["fid_mu"].numpy(), "sigma": tensors["fid_sigma"].numpy()}
    except Exception:  # truncated or foreign file (SafetensorError, OSError, KeyError, …): recompute
        return None
    return features, stats


def _save_cached(path: Path, key: dict, features: Dict[str, torch.Tensor], stats: dict) -> None:
    """Written atomically (:func:`~litediff_core.fileio.write_bytes_atomic`)."""
    from ..fileio import write_bytes_atomic

    tensors = {f"features.{k}": v.contiguous() for k, v in features.items()}
    tensors["fid_mu"] = torch.from_numpy(np.ascontiguousarray(stats["mu"]))
    tensors["fid_sigma"] = torch.from_numpy(np.ascontiguousarray(stats["sigma"]))
    data = safetensors_save(tensors, metadata={"key": json.dumps(key, sort_keys=True)})
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, data)


# ----------------------------------------------------------------------------- bootstrap

BOOTSTRAP_CHUNK = 25          # resamples per batched step (and per progress report)
BOOTSTRAP_CHUNK_BYTES = 2**26  # at most ~64 MiB per batched n × d array of resamples


def bootstrap_indices(n: int, resamples: int, seed: int) -> np.ndarray:
    """``resamples`` × ``n`` row indices drawn with replacement, one ``rng.integers(0, n, n)``
    call per resample (the stream of the former one-resample-at-a-time loop: same seed, same
    resamples)."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(0, n, n) for _ in range(resamples)]) if resamples else \
        np.zeros((0, n), dtype=np.int64)


@contextlib.contextmanager
def _torch_threads(n: int):
    """torch's intra-op thread count set to ``n`` for the block, then restored. Batched LAPACK
    with 2 threads on a 2-core machine that is busy elsewhere (a dashboard server, a sampler)
    ran 10–70× slower than with 1 (svdvals of 200 × 200×128: 22 s vs 0.3 s)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@torch.no_grad()
def bootstrap_fids(features: torch.Tensor, ref_stats: dict, indices: np.ndarray,
                   progress: Optional[Callable[[int], None]] = None) -> np.ndarray:
    """FID of each resample ``features[indices[b]]`` against the fixed reference statistics
    (``{"mu", "sigma"}`` as torch-fidelity computes them), batched, in float64.

    The same quantity as ``fid_statistics_to_metric(fid_features_to_statistics(resample),
    ref_stats)`` — ‖μ_b − μ_r‖² + tr Σ_b + tr Σ_r − 2 tr √(Σ_b Σ_r) — with the trace of the
    square root taken as tr √(R Σ_b R), R = √Σ_r (Σ_b Σ_r is similar to R Σ_b R, which is
    symmetric positive semi-definite). R comes from one eigendecomposition of the reference
    covariance; R Σ_b R = Y_bᵀ Y_b / (n − 1) with Y_b the centred resample times R, so the
    trace of its square root is the sum of Y_b's singular values / √(n − 1): no d × d
    non-symmetric eigenproblem per resample. ``progress(done)`` is called after each chunk.
    """
    x = features.detach().to("cpu", torch.float64)
    n, d = x.shape
    idx = torch.from_numpy(np.asarray(indices, dtype=np.int64))
    out = np.empty(idx.shape[0], dtype=np.float64)
    if idx.shape[0] == 0:
        return out
    mu_r = torch.as_tensor(np.asarray(ref_stats["mu"]), dtype=torch.float64)
    sigma_r = torch.as_tensor(np.asarray(ref_stats["sigma"]), dtype=torch.float64)
    chunk = max(1, min(BOOTSTRAP_CHUNK, BOOTSTRAP_CHUNK_BYTES // (8 * n * d)))
    with _torch_threads(1):
        w, v = torch.linalg.eigh((sigma_r + sigma_r.T) / 2)
        root = (v * w.clamp(min=0).sqrt()) @ v.T
        tr_r = torch.trace(sigma_r)
        for start in range(0, idx.shape[0], chunk):
            xb = x[idx[start:start + chunk]]                       # b × n × d
            mu_b = xb.mean(dim=1)
            xc = xb - mu_b[:, None, :]
            tr_b = xc.square().sum(dim=(1, 2)) / (n - 1)
            tr_sqrt = torch.linalg.svdvals(xc @ root).sum(dim=1) / (n - 1) ** 0.5
            diff = mu_b - mu_r
            fid = diff.square().sum(dim=1) + tr_b + tr_r - 2 * tr_sqrt
            out[start:start + len(fid)] = fid.numpy()
            if progress is not None:
                progress(start + len(fid))
    return out


# ----------------------------------------------------------------------------- the entry point

def fidelity(generated_uint8: Images, reference: Union[str, Images], *, extractor: str = "auto",
             extractor_weights=None, reference_name: Optional[str] = None,
             reference_split: str = "test", reference_size: Optional[int] = None,
             kid_subset_size: Optional[int] = None, kid_subsets: int = 100,
             bootstrap: Optional[int] = None,
             seed: int = 0, batch_size: int = 100, device: str = "cpu", cache: bool = True,
             setup: Optional[dict] = None, progress: Optional[Progress] = None) -> FidelityResult:
    """FID (with a bootstrap 95 % interval), KID and precision/recall of ``generated_uint8``
    (uint8 N×C×H×W or an ImageDataset) against ``reference`` (a dataset name loaded with
    ``reference_split``, an ImageDataset or uint8 images; ``reference_size`` draws a fixed subset).

    ``extractor``: ``"auto"`` (Fashion-MNIST CNN for 1-channel images, Inception-v3 for RGB),
    ``"litediff-fmnist-cnn-v1"`` or ``"inception-v3-compat"``; ``extractor_weights``: a classifier
    folder or ``FashionClassifier`` for the CNN, a weights file for Inception.
    KID uses subsets of ``min(kid_subset_size or 1000, n_generated, n_reference)`` images; KID
    subsets and the bootstrap are seeded by ``seed``. ``bootstrap`` resamples for the FID
    interval: by default 200 for features of ≤ 512 dimensions, 20 (a coarse interval) for
    Inception's 2048, where each resample costs seconds on a CPU; 0 gives no interval.
    Precision is the share of generated images inside the reference manifold, recall the
    converse (k = 3 neighbours).
    """
    generated = _as_uint8(generated_uint8, "generated images")
    ref_images, ref_name = _reference_images(reference, reference_split, reference_size, reference_name)
    if generated.shape[1:] != ref_images.shape[1:]:
        raise MetricError(f"generated images are {tuple(generated.shape[1:])} (C, H, W) but the "
                          f"reference {ref_name!r} is {tuple(ref_images.shape[1:])}")
    n_gen, n_ref = generated.shape[0], ref_images.shape[0]
    if min(n_gen, n_ref) < MIN_SAMPLES:
        raise MetricError(f"FID/KID/precision-recall need at least {MIN_SAMPLES} images on each "
                          f"side (got {n_gen} generated, {n_ref} reference); use ≥ 1000 for "
                          f"numbers worth comparing")
    if batch_size < 1 or (bootstrap or 0) < 0 or kid_subsets < 1:
        raise MetricError("batch_size and kid_subsets must be ≥ 1 and bootstrap ≥ 0")
    cuda = torch.device(device).type == "cuda"
    if cuda and not torch.cuda.is_available():
        raise MetricError("device 'cuda' was asked for but no CUDA GPU is available")
    kid_size = min(kid_subset_size or KID_SUBSET_SIZE, n_gen, n_ref)

    name = extractor_for(generated.shape[1], extractor)
    rgb = name == INCEPTION_EXTRACTOR
    cls = FEATURE_EXTRACTORS_REGISTRY[name]
    layer = {m: cls.get_default_feature_layer_for_metric(m) for m in ("fid", "kid", "prc")}
    layers = list(dict.fromkeys(layer.values()))
    feat_extractor = create_feature_extractor(name, layers, cuda=cuda, verbose=False,
                                              **extractor_kwargs(name, extractor_weights))

    key = reference_cache_key(ref_name, reference_split if isinstance(reference, str) else "",
                              reference_size, ref_images, name, weights_fingerprint(feat_extractor), layers)
    path = _cache_path(key)
    cached = _load_cached(path, key) if cache else None
    if bootstrap is None:
        dim = _feature_dim(feat_extractor, layer["fid"], generated[:1], rgb, cuda)
        bootstrap = BOOTSTRAP_DEFAULT if dim <= 512 else BOOTSTRAP_DEFAULT_HIGH_DIM
    total = (0 if cached else n_ref) + n_gen + bootstrap
    if cached:
        ref_features, ref_stats = cached
    else:
        ref_features = _extract(feat_extractor, ref_images, rgb, batch_size, cuda, progress,
                                0, total, "reference features")
        ref_stats = fid_features_to_statistics(ref_features[layer["fid"]])
        if cache:
            _save_cached(path, key, ref_features, ref_stats)
    done = 0 if cached else n_ref
    gen_features = _extract(feat_extractor, generated, rgb, batch_size, cuda, progress,
                            done, total, "generated features")
    done += n_gen

    # Convention of torch-fidelity: input 1 is generated, input 2 is the reference.
    gen_stats = fid_features_to_statistics(gen_features[layer["fid"]])
    fid = fid_statistics_to_metric(gen_stats, ref_stats, False)[KEY_METRIC_FID]
    kid = kid_features_to_metric(gen_features[layer["kid"]], ref_features[layer["kid"]],
                                 kid_subsets=kid_subsets, kid_subset_size=kid_size,
                                 rng_seed=seed, verbose=False)
    prc = prc_features_to_metric(gen_features[layer["prc"]], ref_features[layer["prc"]],
                                 prc_neighborhood=PRC_NEIGHBORHOOD, save_cpu_ram=True,
                                 prc_batch_size=PRC_BATCH_SIZE, verbose=False)

    boot = bootstrap_fids(gen_features[layer["fid"]], ref_stats,
                          bootstrap_indices(n_gen, bootstrap, seed),
                          progress=lambda b: report(progress, done + b, total, "FID bootstrap"))
    # Resampling with replacement inflates FID (duplicates shrink the covariance's diversity):
    # the raw percentiles sit above FID and often exclude it. Re-centre them on the estimate.
    bias = float(np.mean(boot)) - fid if len(boot) else 0.0
    lo, hi = np.percentile(boot, [2.5, 97.5]) - bias if len(boot) else (fid, fid)
    ci = (max(float(lo), min(fid, 0.0)), float(hi))  # floored at 0 (or a rounding-negative FID)

    return FidelityResult(
        fid=float(fid), fid_ci95=ci, fid_bootstrap_bias=bias,
        kid_mean=kid[KEY_METRIC_KID_MEAN], kid_std=kid[KEY_METRIC_KID_STD],
        precision=prc[KEY_METRIC_PRECISION], recall=prc[KEY_METRIC_RECALL],
        f_score=prc[KEY_METRIC_F_SCORE],
        n_generated=n_gen, n_reference=n_ref, extractor=name, reference_name=ref_name,
        kid_subset_size=kid_size, bootstrap=bootstrap, seed=seed,
        reference_from_cache=cached is not None, setup=dict(setup or {}),
    )

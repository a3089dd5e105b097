"""Feature extractors for FID / KID / precision-recall, as torch-fidelity sees them.

* ``litediff-fmnist-cnn-v1``: the Fashion-MNIST classifier (:mod:`litediff_core.models.classifier`),
  registered with torch-fidelity. It takes uint8 B×C×H×W like every torch-fidelity extractor,
  turns RGB into gray (ITU-R 601 luma), resizes to 28×28 (bilinear, antialiased) when needed and
  maps to [-1, 1]; features: ``"features"`` (the 128-d penultimate layer, used by FID, KID and
  precision/recall) and ``"logits"`` (10 classes, for the Inception Score).
  The version in the name changes whenever preprocessing or architecture change, because
  torch-fidelity caches by name; our own cache also keys on a hash of the weights.
* ``inception-v3-compat``: torch-fidelity's Inception-v3, for RGB data, only when its weights
  are on disk or can be downloaded at once (see :func:`inception_weights`).
"""

from __future__ import annotations

import copy
import hashlib
import os
import socket
import threading
from pathlib import Path
from typing import Optional, Union
from urllib.parse import urlparse

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

from ..errors import MetricError, ModelSourceError
from ..models.classifier import FashionClassifier, load_classifier

FMNIST_EXTRACTOR = "litediff-fmnist-cnn-v1"
INCEPTION_EXTRACTOR = "inception-v3-compat"
INCEPTION_ENV = "LITEDIFF_INCEPTION_WEIGHTS"
DOWNLOAD_TIMEOUT_S = 10

ClassifierSource = Union[None, str, os.PathLike, FashionClassifier]


# ----------------------------------------------------------------------------- Fashion-MNIST CNN

def uint8_to_classifier_input(x: torch.Tensor, size: int = 28) -> torch.Tensor:
    """uint8 B×C×H×W (C = 1 or 3) to the classifier's float B×1×size×size in [-1, 1]."""
    if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] not in (1, 3):
        raise MetricError(f"expected uint8 B×1×H×W or B×3×H×W images, got {x.dtype} {tuple(x.shape)}")
    x = x.float()
    if x.shape[1] == 3:
        luma = torch.tensor([0.299, 0.587, 0.114], device=x.device).view(1, 3, 1, 1)
        x = (x * luma).sum(dim=1, keepdim=True)
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x.div(127.5).sub(1.0)


class FashionFeatureExtractor(FeatureExtractorBase):
    """torch-fidelity extractor around :class:`FashionClassifier`.

    Every ``calculate_metrics`` keyword reaches this constructor; ours is ``litediff_classifier``:
    a classifier folder (``save_classifier`` layout), a ``FashionClassifier`` object (copied, so
    the caller's model is never changed) or None for the shipped weights.
    ``feature_extractor_weights_path`` (torch-fidelity's keyword) is accepted as a folder too.
    """

    def __init__(self, name, features_list, litediff_classifier: ClassifierSource = None,
                 feature_extractor_weights_path=None, **kwargs):
        super().__init__(name, features_list)
        source = litediff_classifier if litediff_classifier is not None else feature_extractor_weights_path
        if isinstance(source, FashionClassifier):
            model = copy.deepcopy(source)
        else:
            try:
                model = load_classifier(source)
            except ModelSourceError as e:
                raise MetricError(f"the Fashion-MNIST feature extractor needs the classifier: {e}") from None
        self.classifier = model.float().eval().requires_grad_(False)

    @staticmethod
    def get_provided_features_list():
        return "features", "logits"

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return {"isc": "logits", "fid": "features", "kid": "features", "prc": "features"}[metric]

    @staticmethod
    def can_be_compiled():
        return True

    @staticmethod
    def get_dummy_input_for_compile():
        return (torch.rand([1, 1, 28, 28]) * 255).to(torch.uint8)

    def forward(self, x):
        features = self.classifier.features(uint8_to_classifier_input(x))
        out = {"features": features}
        if "logits" in self.features_list:
            out["logits"] = self.classifier.head(features)
        return tuple(out[name] for name in self.features_list)


if FMNIST_EXTRACTOR not in FEATURE_EXTRACTORS_REGISTRY:  # module re-imports must not fail
    register_feature_extractor(FMNIST_EXTRACTOR, FashionFeatureExtractor)


# ----------------------------------------------------------------------------- Inception-v3 weights

def _hub_weights_file() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / URL_INCEPTION_V3.rsplit("/", 1)[1]


def _resolve_host(url: str) -> None:
    """Resolve the URL's host in a daemon thread, giving up after DOWNLOAD_TIMEOUT_S: socket
    timeouts do not cover name resolution, which can hang on a broken network."""
    host = urlparse(url).hostname
    outcome = {}

    def lookup():
        try:
            socket.getaddrinfo(host, 443)
            outcome["ok"] = True
        except OSError as e:
            outcome["error"] = e

    thread = threading.Thread(target=lookup, daemon=True)
    thread.start()
    thread.join(DOWNLOAD_TIMEOUT_S)
    if "ok" not in outcome:
        raise outcome.get("error") or TimeoutError(f"{host} not resolved in {DOWNLOAD_TIMEOUT_S} s")


def _download(url: str, target: Path) -> None:
    """Download with a socket timeout, so that an unreachable network fails within seconds."""
    _resolve_host(url)
    target.parent.mkdir(parents=True, exist_ok=True)
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        torch.hub.download_url_to_file(url, str(target), progress=False)  # writes atomically
    finally:
        socket.setdefaulttimeout(old)


def inception_weights(path: Optional[str] = None, download: bool = True) -> str:
    """Path of torch-fidelity's Inception-v3 weights: ``path``, else ``$LITEDIFF_INCEPTION_WEIGHTS``,
    else torch hub's cache, else downloaded there (failing fast). The file is checked to load with
    ``torch.load(weights_only=True)`` (tensors only, no pickled code) before torch-fidelity,
    which loads it with ``weights_only=False``, ever sees it. Raises :class:`MetricError`."""
    how = (f"Download {URL_INCEPTION_V3} on a connected machine, then pass the file's path "
           f"as the Inception weights (extractor_weights=...) or set ${INCEPTION_ENV} to it")
    chosen = path or os.environ.get(INCEPTION_ENV)
    if chosen:
        file = Path(chosen).expanduser()
        if not file.is_file():
            raise MetricError(f"Inception-v3 weights file {file} does not exist. {how}.")
    else:
        file = _hub_weights_file()
        if not file.is_file():
            if not download:
                raise MetricError(f"Inception-v3 weights are not in {file}. {how}.")
            try:
                _download(URL_INCEPTION_V3, file)
            except Exception as e:  # URLError, timeouts, HTTP and disk errors alike
                raise MetricError(f"Inception-v3 weights (needed for FID on RGB images) could not be "
                                  f"downloaded ({type(e).__name__}: {e}). {how}.") from None
    try:
        state = torch.load(str(file), map_location="cpu", weights_only=True)
    except Exception as e:
        raise MetricError(f"{file} is not a plain Inception-v3 state dict ({type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''}). {how}.") from None
    if not isinstance(state, dict) or "Mixed_7c.branch_pool.conv.weight" not in state:
        raise MetricError(f"{file} does not hold torch-fidelity's Inception-v3 weights. {how}.")
    return str(file)


# ----------------------------------------------------------------------------- shared helpers

def weights_fingerprint(module: nn.Module) -> str:
    """SHA-256 of a module's state dict (names, dtypes, shapes, values): keys caches by weights."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def extractor_for(channels: int, extractor: str = "auto") -> str:
    """Resolve ``"auto"``: the Fashion-MNIST CNN for 1-channel images, Inception-v3 for RGB."""
    aliases = {"fmnist": FMNIST_EXTRACTOR, "classifier": FMNIST_EXTRACTOR,
               "inception": INCEPTION_EXTRACTOR}
    if extractor == "auto":
        return FMNIST_EXTRACTOR if channels == 1 else INCEPTION_EXTRACTOR
    name = aliases.get(extractor, extractor)
    if name not in (FMNIST_EXTRACTOR, INCEPTION_EXTRACTOR):
        raise MetricError(f"unknown feature extractor {extractor!r}; choose auto, "
                          f"{FMNIST_EXTRACTOR} (fmnist) or {INCEPTION_EXTRACTOR} (inception)")
    return name


def extractor_kwargs(name: str, weights=None) -> dict:
    """torch-fidelity keywords that build extractor ``name`` with ``weights`` (classifier folder or
    object for the CNN, weights file for Inception)."""
    if name == FMNIST_EXTRACTOR:
        return {"litediff_classifier": weights}
    if weights is not None and not isinstance(weights, (str, os.PathLike)):
        raise MetricError(f"Inception-v3 weights must be a file path, not a {type(weights).__name__}")
    return {"feature_extractor_weights_path": inception_weights(weights and str(weights))}

"""The Fashion-MNIST feature classifier: a small CNN used as the domain feature extractor for
FID/KID/precision-recall and for the embedded model's quality gate.

Input: float images in [-1, 1], N×1×28×28. ``features`` gives the 128-d penultimate layer,
``forward`` the 10 class logits. Weights ship as safetensors + config.json (no pickle).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from ..errors import ModelSourceError
from .embedded import CLASSIFIER_NAME, embedded_path


class FashionClassifier(nn.Module):
    def __init__(self, width: int = 32, feature_dim: int = 128, num_classes: int = 10):
        super().__init__()
        self.config = {"width": width, "feature_dim": feature_dim, "num_classes": num_classes}
        w = width
        self.body = nn.Sequential(
            nn.Conv2d(1, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(),
            nn.Conv2d(w, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(),
            nn.MaxPool2d(2),                                            # 14×14
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU(),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU(),
            nn.MaxPool2d(2),                                            # 7×7
            nn.Flatten(),
            nn.Dropout(0.3),
            nn.Linear(2 * w * 7 * 7, feature_dim), nn.ReLU(),
        )
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(feature_dim, num_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))

    @torch.no_grad()
    def probabilities(self, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        self.eval()
        return torch.cat([F.softmax(self(x[i:i + batch_size]), dim=1)
                          for i in range(0, len(x), batch_size)])


def save_classifier(model: FashionClassifier, folder, meta: dict) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({**model.config, **meta}, indent=2))
    return folder


def load_classifier(folder=None) -> FashionClassifier:
    """Load the shipped classifier (or one saved by ``save_classifier``), in eval mode."""
    folder = Path(folder) if folder else embedded_path(CLASSIFIER_NAME)
    try:
        cfg = json.loads((folder / "config.json").read_text())
        state = load_file(str(folder / "model.safetensors"))
    except (OSError, ValueError) as e:
        raise ModelSourceError(f"cannot load the classifier from {folder}: {e}; "
                               f"train one with `litediff train-classifier`") from None
    model = FashionClassifier(cfg["width"], cfg["feature_dim"], cfg["num_classes"])
    model.load_state_dict(state)
    return model.eval()

"""Train the Fashion-MNIST feature classifier (``litediff train-classifier``)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F

from ..data import load_dataset
from ..models.classifier import FashionClassifier, save_classifier
from ..progress import Event, Progress, report


@dataclass
class TrainClassifierConfig:
    out: str = "runs/classifier"
    epochs: int = 6
    batch_size: int = 128
    lr: float = 2e-3
    seed: int = 0
    threads: Optional[int] = None


@torch.no_grad()
def accuracy(model: FashionClassifier, data) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(data), 1000):
        idx = torch.arange(i, min(i + 1000, len(data)))
        correct += (model(data.batch(idx)).argmax(1) == data.labels[idx]).sum().item()
    return correct / len(data)


def train_classifier(cfg: TrainClassifierConfig, progress: Optional[Progress] = None) -> dict:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    train, test = load_dataset("fashion-mnist", "train"), load_dataset("fashion-mnist", "test")
    torch.manual_seed(cfg.seed)
    model = FashionClassifier()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    steps_per_epoch = len(train) // cfg.batch_size
    total = cfg.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total)
    g = torch.Generator().manual_seed(cfg.seed)
    t0, step = time.time(), 0
    for _ in range(cfg.epochs):
        model.train()
        perm = torch.randperm(len(train), generator=g)
        for b in range(steps_per_epoch):
            idx = perm[b * cfg.batch_size:(b + 1) * cfg.batch_size]
            x = train.batch(idx)
            # light augmentation: random shifts of up to 2 pixels
            dx, dy = torch.randint(-2, 3, (2,), generator=g).tolist()
            x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
            loss = F.cross_entropy(model(x), train.labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            report(progress, step, total, Event(f"loss {loss.item():.3f}", loss=loss.item(), step=step))
    acc = accuracy(model, test)
    meta = {"test_accuracy": acc, "train_seconds": round(time.time() - t0, 1),
            "training": asdict(cfg), "data_source": train.source,
            "command": f"litediff train-classifier --out {cfg.out} --epochs {cfg.epochs} "
                       f"--seed {cfg.seed}"}
    save_classifier(model.eval(), Path(cfg.out), meta)
    return meta

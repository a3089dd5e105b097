from __future__ import annotations

import gzip
import os
import socket
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import torch

from ..errors import DataError

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
MNIST_CLASSES = [str(i) for i in range(10)]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck"]
DOWNLOAD_TIMEOUT_S = 10


def cache_dir() -> Path:
    """User cache for datasets and metric statistics (``$LITEDIFF_CACHE`` or ~/.cache/litediff)."""
    root = os.environ.get("LITEDIFF_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "litediff")
    return Path(root)


@dataclass
class ImageDataset(torch.utils.data.Dataset):
    """Images as a uint8 tensor N×C×H×W; ``ds[i]`` gives a float tensor in [-1, 1]."""

    name: str
    uint8: torch.Tensor
    labels: Optional[torch.Tensor] = None
    classes: List[str] = field(default_factory=list)
    source: str = ""

    def __post_init__(self):
        if self.uint8.dtype != torch.uint8 or self.uint8.ndim != 4:
            raise DataError(f"{self.name}: expected uint8 N×C×H×W images, got "
                            f"{self.uint8.dtype} {tuple(self.uint8.shape)}")

    def __len__(self) -> int:
        return self.uint8.shape[0]

    def __getitem__(self, i):
        return to_float(self.uint8[i])

    @property
    def channels(self) -> int:
        return self.uint8.shape[1]

    @property
    def resolution(self) -> int:
        return self.uint8.shape[2]

    def batch(self, index: torch.Tensor) -> torch.Tensor:
        """Float images in [-1, 1] for a tensor of indices."""
        return to_float(self.uint8[index])


def to_float(x: torch.Tensor) -> torch.Tensor:
    return x.float().div(127.5).sub(1.0)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] floats to uint8 (clamped), the inverse of ``to_float`` up to rounding."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


# ----------------------------------------------------------------------------- IDX (MNIST family)

def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read {path}: {e}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(f"{path} is not an IDX file")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    if len(data) - offset != int(np.prod(dims)):
        raise DataError(f"{path} is truncated or corrupt (expected {dims})")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(dims)


def _find_idx(folder: Path, prefix: str, kind: str) -> Optional[Path]:
    for sub in ("", "raw", "FashionMNIST/raw", "MNIST/raw"):
        for ext in (".gz", ""):
            p = folder / sub / f"{prefix}-{kind}-ubyte{ext}"
            if p.is_file():
                return p
    return None


def _idx_pair(folder: Path, split: str):
    prefix = "train" if split == "train" else "t10k"
    img = _find_idx(folder, prefix, "images-idx3")
    lab = _find_idx(folder, prefix, "labels-idx1")
    return (img, lab) if img and lab else None


@contextmanager
def _download_timeout():
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def _torchvision_download(cls_name: str, root: Path, what: str) -> None:
    import torchvision.datasets as tvd

    root.mkdir(parents=True, exist_ok=True)
    try:
        with _download_timeout():
            getattr(tvd, cls_name)(root=str(root), train=True, download=True)
            getattr(tvd, cls_name)(root=str(root), train=False, download=True)
    except Exception as e:  # torchvision raises RuntimeError/URLError/OSError variously
        raise DataError(
            f"{what} was not found locally and could not be downloaded into {root} "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'no detail'}). "
            f"Put the files in a folder and set LITEDIFF_DATA to it, or connect to the internet."
        ) from None


def _mnist_like(name: str, split: str, classes: List[str], search: List[Path],
                tv_class: str, what: str) -> ImageDataset:
    for folder in search:
        pair = _idx_pair(folder, split)
        if pair:
            break
    else:
        target = cache_dir() / name
        _torchvision_download(tv_class, target, what)
        pair = _idx_pair(target, split)
        if not pair:
            raise DataError(f"{what}: download finished but no IDX files in {target}")
    images = _read_idx(pair[0])
    labels = _read_idx(pair[1])
    if images.ndim != 3 or labels.shape[0] != images.shape[0]:
        raise DataError(f"{what}: images {images.shape} and labels {labels.shape} do not match")
    return ImageDataset(name=name, uint8=torch.from_numpy(images.copy()).unsqueeze(1),
                        labels=torch.from_numpy(labels.astype(np.int64)), classes=classes,
                        source=str(pair[0].parent))


def _env_folders(name: str) -> List[Path]:
    env = os.environ.get("LITEDIFF_DATA")
    return [Path(env) / name, Path(env)] if env else []


def _search(name: str) -> List[Path]:
    """Where an IDX dataset is looked for, in order: $LITEDIFF_DATA, the user cache, Debian."""
    debian = [DEBIAN_FASHION_MNIST] if name == "fashion-mnist" else []
    return _env_folders(name) + [cache_dir() / name] + debian


def local_folder(name: str) -> Optional[Path]:
    """The folder ``load_dataset(name)`` reads both splits of fashion-mnist or mnist from, or
    None where it would have to download them."""
    return next((f for f in _search(name) if _idx_pair(f, "train") and _idx_pair(f, "test")),
                None)


def fashion_mnist(split: str = "train") -> ImageDataset:
    return _mnist_like("fashion-mnist", split, FASHION_CLASSES, _search("fashion-mnist"),
                       "FashionMNIST", "Fashion-MNIST (Debian package dataset-fashion-mnist)")


def mnist(split: str = "train") -> ImageDataset:
    return _mnist_like("mnist", split, MNIST_CLASSES, _search("mnist"), "MNIST", "MNIST")


def cifar10(split: str = "train") -> ImageDataset:
    import torchvision.datasets as tvd

    folders = _env_folders("cifar10") + [cache_dir() / "cifar10"]
    for root in folders:
        try:
            ds = tvd.CIFAR10(root=str(root), train=(split == "train"), download=False)
            break
        except RuntimeError:
            continue
    else:
        root = cache_dir() / "cifar10"
        _torchvision_download("CIFAR10", root, "CIFAR-10")
        ds = tvd.CIFAR10(root=str(root), train=(split == "train"), download=False)
    images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
    return ImageDataset(name="cifar10", uint8=images, labels=torch.tensor(ds.targets),
                        classes=CIFAR10_CLASSES, source=str(root))


def image_folder(path: str, resolution: int = 32, channels: int = 3,
                 limit: Optional[int] = None) -> ImageDataset:
    """Every image under ``path`` (recursively), centre-cropped and resized to ``resolution``."""
    from PIL import Image, UnidentifiedImageError

    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise DataError(f"image folder {folder} does not exist")
    files = sorted(p for p in folder.rglob("*")
                   if p.suffix.lower() in {".png", ".jpg", ".jpeg", ".bmp", ".webp"})[:limit]
    if not files:
        raise DataError(f"no .png/.jpg/.bmp/.webp images under {folder}")
    mode = {1: "L", 3: "RGB"}.get(channels)
    if mode is None:
        raise DataError(f"image folder: channels must be 1 or 3, not {channels}")
    arrays = []
    for f in files:
        try:
            im = Image.open(f).convert(mode)
        except (UnidentifiedImageError, OSError) as e:
            raise DataError(f"cannot read image {f}: {e}") from None
        s = min(im.size)
        left, top = (im.width - s) // 2, (im.height - s) // 2
        im = im.crop((left, top, left + s, top + s)).resize((resolution, resolution),
                                                            Image.BICUBIC)
        a = np.asarray(im, dtype=np.uint8)
        arrays.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
    return ImageDataset(name=f"folder:{folder}", uint8=torch.from_numpy(np.stack(arrays)),
                        source=str(folder))


DATASETS: Dict[str, Callable[..., ImageDataset]] = {
    "fashion-mnist": fashion_mnist,
    "mnist": mnist,
    "cifar10": cifar10,
}


def load_dataset(name: str, split: str = "train", **kwargs) -> ImageDataset:
    """``name`` is a key of :data:`DATASETS` or ``folder:<path>`` for an image folder."""
    if name.startswith("folder:"):
        return image_folder(name[len("folder:"):], **kwargs)
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)} "
                        f"or folder:<path>")
    if split not in ("train", "test"):
        raise DataError(f"split must be 'train' or 'test', not {split!r}")
    return DATASETS[name](split)

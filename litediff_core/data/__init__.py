"""Datasets, all of one kind: :class:`ImageDataset` (uint8 images kept in memory; items are float
tensors in [-1, 1], C×H×W). Metrics use the uint8 view ``dataset.uint8``.

Fashion-MNIST (the default) is searched in ``$LITEDIFF_DATA``, the user cache, Debian's
``dataset-fashion-mnist`` folder, then downloaded; MNIST and CIFAR-10 use torchvision's
downloaders into the user cache.
"""

from .datasets import (
    DATASETS,
    DEBIAN_FASHION_MNIST,
    ImageDataset,
    cache_dir,
    load_dataset,
    local_folder,
)

__all__ = ["DATASETS", "DEBIAN_FASHION_MNIST", "ImageDataset", "cache_dir", "load_dataset",
           "local_folder"]

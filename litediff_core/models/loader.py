"""One loader for the three kinds of base-model source.

- ``embedded:<name>`` (or ``embedded`` for the default): weights shipped inside the package;
- a local folder: a diffusers DDPMPipeline folder (``unet/`` + ``scheduler/``), or a flat
  UNet2DModel folder (``config.json`` + weights, optional ``scheduler_config.json``);
- a Hugging Face hub id of a diffusers UNet2DModel DDPM, e.g. ``google/ddpm-cifar10-32``.

Every failure is a :class:`ModelSourceError` with a message that says what to do; weights are
read from safetensors only: a pickled checkpoint (``.bin``, ``.pt``, ``.ckpt``...) is refused,
since unpickling a file can run any code in it.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import List, Optional

from ..errors import ModelSourceError
from .embedded import DEFAULT_EMBEDDED, EMBEDDED, ddpm_scheduler_config, embedded_path
from .io import META_FILE

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
HUB_PATTERNS = ["*.json", "*.safetensors", "*.bin", "unet/*", "scheduler/*", "README.md"]
PICKLED = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def _refuse_pickled(path: Path):
    raise ModelSourceError(
        f"{path} is a pickled checkpoint and LiteDiff never unpickles (loading a pickle can run "
        f"any code in it): convert it to safetensors where you trust it (safetensors.torch."
        f"save_file, or diffusers' save_pretrained(safe_serialization=True)) and pass the folder")


@dataclass
class ModelMeta:
    source: str
    kind: str                      # "embedded" | "hub" | "folder"
    path: str                      # local folder the weights were read from
    resolution: int
    channels: int
    dataset: Optional[str] = None  # dataset the model belongs to, when known
    classes: List[str] = field(default_factory=list)
    card: dict = field(default_factory=dict)  # litediff.json contents (training, metrics, ...)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class BaseModel:
    unet: "object"                 # diffusers.UNet2DModel, eval mode, on CPU
    scheduler: "object"            # diffusers.DDPMScheduler (the training noise schedule)
    meta: ModelMeta


def parse_source(source: str):
    """Classify a source string: ('embedded', name) | ('folder', path) | ('hub', repo_id)."""
    source = (source or "").strip()
    if not source:
        raise ModelSourceError("no model given: use embedded, a local folder or a hub id")
    if source == "embedded" or source.startswith("embedded:"):
        name = source.partition(":")[2] or DEFAULT_EMBEDDED
        if name not in EMBEDDED:
            raise ModelSourceError(f"unknown embedded model {name!r}; available: "
                                   f"{', '.join('embedded:' + n for n in EMBEDDED)}")
        return "embedded", name
    path = Path(source).expanduser()
    if path.exists():
        return "folder", str(path)
    if HUB_ID.match(source) and not source.startswith((".", "/", "~")):
        return "hub", source
    raise ModelSourceError(f"{source!r} is neither an existing folder nor a hub id "
                           f"(owner/name) nor embedded:<name>")


def load_base(source: str = "embedded") -> BaseModel:
    kind, ref = parse_source(source)
    folder = _download(ref) if kind == "hub" else _local_folder(kind, ref)
    unet, scheduler, model_dir = _load_folder(folder, source)
    meta = _meta(source, kind, folder, model_dir, dict(unet.config))
    return BaseModel(unet=unet, scheduler=scheduler, meta=meta)


def read_meta(source: str = "embedded") -> Optional[ModelMeta]:
    """The model's facts and card without loading its weights (no torch import: the app's home
    shows them at once). For the embedded model and local folders; ``None`` for a hub id (its
    files come with :func:`load_base`) or a config that leaves the shape to diffusers'
    defaults. Refuses what :func:`load_base` would refuse for the
    files' shape: no UNet config, another UNet class, pickled or missing weights, a truncated or
    corrupt safetensors file (its header and coverage are checked, not its numbers)."""
    kind, ref = parse_source(source)
    if kind == "hub":
        return None
    folder = _local_folder(kind, ref)
    unet_dir = _unet_dir(folder)
    config = _unet_config(unet_dir, source)
    weights = _weights(unet_dir)
    if not all(isinstance(config.get(k), int) for k in ("in_channels", "sample_size")):
        return None  # diffusers' defaults fill these in: load_base knows them
    from safetensors import SafetensorError, safe_open

    for f in weights:
        try:
            with safe_open(str(f), framework="numpy") as h:
                h.keys()
        except (SafetensorError, OSError) as e:
            raise ModelSourceError(f"cannot load the UNet weights in {unet_dir}: {e}. Is the "
                                   f"file complete and a diffusers UNet2DModel?") from None
    return _meta(source, kind, folder, unet_dir, config)


def _meta(source: str, kind: str, folder: Path, unet_dir: Path, config: dict) -> ModelMeta:
    card = _read_card(folder)
    channels, resolution = int(config["in_channels"]), int(config["sample_size"])
    return ModelMeta(source=source, kind=kind, path=str(unet_dir), resolution=resolution,
                     channels=channels, dataset=card.get("dataset") or
                     _guess_dataset(source, channels, resolution),
                     classes=card.get("classes", []), card=card)


def _local_folder(kind: str, ref: str) -> Path:
    if kind == "embedded":
        folder = embedded_path(ref)
        if not (folder / "unet" / "config.json").exists():
            raise ModelSourceError(f"embedded model {ref!r} is missing from {folder}; "
                                   f"reinstall the package or run `litediff train-base`")
        return folder
    folder = Path(ref)
    if folder.is_file():
        if folder.suffix.lower() in PICKLED:
            _refuse_pickled(folder)
        raise ModelSourceError(f"{folder} is a file; give the diffusers folder that holds "
                               f"config.json and the safetensors weights")
    return folder


def _download(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError

    try:
        return Path(snapshot_download(repo_id, allow_patterns=HUB_PATTERNS, etag_timeout=5))
    except (HfHubHTTPError, OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelSourceError(
            f"cannot get {repo_id!r} from the Hugging Face hub ({first[:160]}). If you are "
            f"offline, download it on a connected machine and pass its local folder instead."
        ) from None


def _unet_dir(folder: Path) -> Path:
    if (folder / "unet" / "config.json").exists():
        return folder / "unet"
    if (folder / "config.json").exists():
        return folder
    raise ModelSourceError(f"{folder} is not a diffusers UNet folder: no unet/config.json "
                           f"or config.json inside")


def _load_folder(folder: Path, source: str):
    from diffusers import DDPMScheduler, UNet2DModel

    if (folder / "pruning_history.json").exists():  # channel-pruned: rebuild, then load
        from ..compress.io import load_compressed

        unet, scheduler, _ = load_compressed(folder)
        return unet, scheduler, folder / "unet"
    unet_dir = _unet_dir(folder)
    _unet_config(unet_dir, source)
    _weights(unet_dir)
    try:
        unet = UNet2DModel.from_pretrained(str(unet_dir), use_safetensors=True)
    except Exception as e:  # diffusers raises OSError/ValueError/RuntimeError/safetensors errors
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelSourceError(f"cannot load the UNet weights in {unet_dir}: {first[:200]}. "
                               f"Is the file complete and a diffusers UNet2DModel?") from None
    sched_file = next((p for p in (folder / "scheduler" / "scheduler_config.json",
                                   folder / "scheduler_config.json") if p.exists()), None)
    try:
        scheduler = (DDPMScheduler.from_pretrained(str(sched_file.parent)) if sched_file
                     else DDPMScheduler(**ddpm_scheduler_config()))
    except Exception as e:
        raise ModelSourceError(f"cannot read the noise schedule {sched_file}: {e}") from None
    return unet.eval(), scheduler, unet_dir


def _unet_config(unet_dir: Path, source: str) -> dict:
    try:
        config = json.loads((unet_dir / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise ModelSourceError(f"{unet_dir / 'config.json'} is unreadable: {e}") from None
    cls = config.get("_class_name", "UNet2DModel")
    if cls != "UNet2DModel":
        raise ModelSourceError(f"{source}: the UNet is a {cls}; LiteDiff Lab handles pixel-space "
                               f"DDPM UNet2DModel checkpoints only")
    return config


def _weights(unet_dir: Path) -> List[Path]:
    weights = sorted(unet_dir.glob("*.safetensors"))
    if not weights:
        pickled = sorted(p for p in unet_dir.iterdir() if p.suffix.lower() in PICKLED)
        if pickled:
            _refuse_pickled(pickled[0])
        raise ModelSourceError(f"no safetensors weights in {unet_dir}")
    return weights


def _read_card(folder: Path) -> dict:
    f = folder / META_FILE
    try:
        return json.loads(f.read_text()) if f.exists() else {}
    except ValueError:
        return {}


def _guess_dataset(source: str, channels: int, resolution: int) -> Optional[str]:
    s = source.lower()
    for key, name in (("fashion", "fashion-mnist"), ("cifar10", "cifar10"),
                      ("cifar-10", "cifar10"), ("mnist", "mnist")):
        if key in s:
            return name
    if channels == 1 and resolution == 28:
        return "fashion-mnist"
    return None

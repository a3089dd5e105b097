"""Device choice shared by the CLI and the app: ``auto`` picks CUDA, then MPS, then CPU."""

from __future__ import annotations

from .errors import LiteDiffError

DEVICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(name: str = "auto") -> str:
    name = (name or "auto").lower()
    if name not in DEVICES:
        raise LiteDiffError(f"unknown device {name!r}; choose one of {', '.join(DEVICES)}")
    import torch  # here, not at import: the app's home lists DEVICES before torch is loaded

    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise LiteDiffError("CUDA was asked for but no CUDA GPU is visible to torch")
    if name == "mps" and not (getattr(torch.backends, "mps", None)
                              and torch.backends.mps.is_available()):
        raise LiteDiffError("MPS was asked for but is not available on this machine")
    return name


def cpu_info(cpuinfo: str = None) -> dict:
    """The CPU's model name and whether it has VNNI int8 dot-product instructions (int8 results
    from ONNX Runtime depend on it), parsed from ``cpuinfo`` (default: /proc/cpuinfo where
    there is one; ``vnni`` is None where it cannot be told)."""
    import platform

    info = {"cpu": platform.processor() or platform.machine(), "vnni": None}
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read()
        except OSError:
            return info
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            info["cpu"] = value.strip()
        elif key.strip() == "flags":
            info["vnni"] = any(f.endswith("vnni") for f in value.split())  # avx512_vnni, avx_vnni
            break
    return info


def machine_of(device) -> str:
    """What ran on ``device``, for labels of training time: the GPU's name, or the CPU model."""
    if str(device).startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(device)
    return cpu_info()["cpu"]


def cpu_label(info: dict = None) -> str:
    """``"AMD EPYC, without VNNI"``: :func:`cpu_info` for the headers of result files."""
    info = cpu_info() if info is None else info
    vnni = {True: "with VNNI", False: "without VNNI"}.get(info["vnni"], "VNNI unknown")
    return f"{info['cpu']}, {vnni}"

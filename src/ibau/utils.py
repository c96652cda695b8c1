"""Small cross-cutting helpers: devices, seeds, environment records."""
from __future__ import annotations

import contextlib
import platform
import random

import numpy as np
import torch


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` means CUDA when available, else CPU. An unavailable device is a one-line error."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"unknown device {device!r}; use 'cpu', 'cuda' or 'cuda:N'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available here; use --device cpu")
    return dev


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module):
    """Run a block with ``model`` in eval mode and give it back in the mode it had, even on an error."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def cuda_devices(device: torch.device | str | None) -> list[int]:
    """The CUDA device indices whose generators ``torch.random.fork_rng`` must save for work on ``device``
    (none for the CPU)."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    return [dev.index if dev.index is not None else torch.cuda.current_device()] if dev.type == "cuda" else []


@contextlib.contextmanager
def seeded_rng(seed: int, device: torch.device | str | None = None):
    """Run a block with the global RNGs (Python's, NumPy's, torch's on the CPU and on ``device``) seeded with
    ``seed`` and restore them after. Library code that draws from them (weight initialisation, dropout) is
    then reproducible from its own seed, and the caller's random streams are left as they were."""
    devices = cuda_devices(device)
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=devices):
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


def environment() -> dict[str, str]:
    """Versions recorded with every result, and the CPU: float results of the same code and seed can differ
    between CPU generations (torch picks its kernels by the instruction set, ``cpu_capability``)."""
    import ibau

    return {
        "ibau": ibau.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "threads": str(torch.get_num_threads()),
        "cpu": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }


def cpu_model() -> str:
    """The CPU's model name with its family/model numbers (Linux's /proc/cpuinfo; else platform's)."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if not line.strip():
                    break  # the first processor's block is enough
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        return platform.processor() or platform.machine()
    name = fields.get("model name") or platform.processor() or platform.machine()
    if "cpu family" in fields and "model" in fields:
        return f"{name} (family {fields['cpu family']}, model {fields['model']})"
    return name

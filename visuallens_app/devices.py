"""Where models run: the device, dtype and thread policy shared by ``models/`` and ``vlm/``.

One policy, so the encoder and the vision-language model never disagree about the machine:
CUDA when present (bf16 when the GPU supports it, else fp16), then Apple's Metal (fp16), else
the CPU in fp32 (half precision on a CPU is slow or unsupported). An explicit device is checked
against the machine, never trusted. torch is imported inside the functions.
"""

from __future__ import annotations

import os
from typing import Any

from visuallens_app.errors import ModelUnavailableError

# One-element list rather than a global statement: set once, read many times.
_threads_configured: list[bool] = [False]

#: The dtypes a user may ask for by name.
DTYPES = ("auto", "float32", "float16", "bfloat16")


def configure_torch_threads() -> int:
    """Cap torch's intra-op threads at the CPUs this process may actually use; returns the count.

    torch sizes its pool from the host's cores, which in a container or under ``taskset`` can be
    far more than the process is allowed; oversubscribed threads spin and slow inference down.
    ``VISUALLENS_TORCH_THREADS`` overrides. Done once per process.
    """
    import torch

    if _threads_configured[0]:
        return int(torch.get_num_threads())
    env = os.environ.get("VISUALLENS_TORCH_THREADS", "")
    if env.isdigit() and int(env) > 0:
        wanted = int(env)
    else:
        try:
            usable = len(os.sched_getaffinity(0))
        except AttributeError:  # macOS, Windows
            usable = os.cpu_count() or 1
        wanted = max(1, min(torch.get_num_threads(), usable))
    if wanted != torch.get_num_threads():
        torch.set_num_threads(wanted)
    _threads_configured[0] = True
    return wanted


def available_device(pref: str = "auto") -> str:
    """The torch device to run on: ``pref`` if it is usable, else the best of cuda, mps, cpu.

    An explicit device that this machine lacks raises ModelUnavailableError rather than silently
    running somewhere slower than the user asked for.
    """
    import torch

    pref = (pref or "auto").strip().lower()
    cuda = torch.cuda.is_available()
    mps = bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()
    if pref == "auto":
        return "cuda" if cuda else "mps" if mps else "cpu"
    if pref == "cpu":
        return "cpu"
    if pref.startswith("cuda"):
        if not cuda:
            raise ModelUnavailableError(
                f"Device {pref!r} was asked for but no CUDA GPU is usable here; use --device cpu."
            )
        index = pref.partition(":")[2]
        if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
            raise ModelUnavailableError(
                f"Device {pref!r} does not exist: this machine has "
                f"{torch.cuda.device_count()} CUDA GPU(s), cuda:0 first."
            )
        return pref
    if pref == "mps":
        if not mps:
            raise ModelUnavailableError(
                "Device 'mps' was asked for but Metal is not available here; use --device cpu."
            )
        return pref
    raise ModelUnavailableError(f"Unknown device {pref!r}; use auto, cpu, cuda or mps.")


def torch_dtype(device: str, pref: str = "auto") -> Any:
    """The dtype to hold weights in on ``device``: ``pref`` by name, or the policy's choice."""
    import torch

    pref = (pref or "auto").strip().lower()
    if pref not in DTYPES:
        raise ModelUnavailableError(f"Unknown dtype {pref!r}; use {', '.join(DTYPES)}.")
    if pref != "auto":
        if pref == "bfloat16" and device.startswith("cuda") and not torch.cuda.is_bf16_supported():
            raise ModelUnavailableError(
                "This GPU does not support bfloat16; use --dtype float16 or auto."
            )
        return getattr(torch, pref)
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device == "mps":
        return torch.float16
    return torch.float32


def free_memory_bytes(device: str) -> int | None:
    """Memory free for new weights on ``device`` (GPU memory, or RAM on a CPU); None: unknown."""
    if device.startswith("cuda"):
        import torch

        free, _total = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    try:  # MemAvailable counts the page cache the kernel would give back; free RAM does not
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):  # macOS, Windows
        return None


def release_memory() -> None:
    """Give freed model memory back: Python's garbage, and CUDA's cached blocks."""
    import gc
    import sys

    gc.collect()
    torch = sys.modules.get("torch")  # never import torch just to free nothing
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()

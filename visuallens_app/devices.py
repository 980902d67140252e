"""Where models run: the device, dtype and thread policy shared by ``models/`` and ``vlm/``.

One policy, so the encoder and the vision-language model never disagree about the machine:
CUDA when present (bf16 when the GPU supports it, else fp16), then Apple's Metal (fp16), else
the CPU in fp32 (half precision on a CPU is slow or unsupported). An explicit device is checked
against the machine, never trusted. torch is imported inside the functions.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from typing import Any

from visuallens_app.errors import ModelUnavailableError

# One-element lists rather than global statements: set once, read many times.
_threads_configured: list[bool] = [False]
_allocator_configured: list[bool] = [False]

# glibc's mallopt parameters (malloc.h) and the largest mmap threshold it accepts on 64-bit
# (HEAP_MAX_SIZE / 2): blocks at or below it can be served from the heap and reused.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_MAX = 32 * 1024 * 1024

#: The dtypes a user may ask for by name.
DTYPES = ("auto", "float32", "float16", "bfloat16")


def prefer_passive_openmp() -> bool:
    """Have OpenMP's idle threads sleep rather than spin, unless the user chose; before torch loads.

    libgomp reads ``OMP_WAIT_POLICY`` once, when torch loads it. By default a thread that
    finishes its share of an operator spins for the others; when the CPUs are shared (other
    programs, the GUI, the decoder threads) the one it waits for is often descheduled, and
    the spinning burnt 3-7x the useful CPU time with small batches on the loaded 2-core
    development machine (issue 16; ``benchmarks/bench_throughput.py``). Returns whether it set
    the policy: not when torch is already imported, nor over the user's own setting.
    """
    if "torch" in sys.modules or "OMP_WAIT_POLICY" in os.environ:
        return False
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return True


# At import: every torch import in the app goes through models/ or vlm/, which import this first.
prefer_passive_openmp()


def configure_torch_threads() -> int:
    """Cap torch's intra-op threads at the CPUs this process may actually use; returns the count.

    torch sizes its pool from the host's cores, which in a container or under ``taskset`` can be
    far more than the process is allowed; oversubscribed threads spin and slow inference down.
    ``VISUALLENS_TORCH_THREADS`` overrides. Done once per process.
    """
    import torch

    if _threads_configured[0]:
        return int(torch.get_num_threads())
    configure_allocator()
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


def configure_allocator() -> bool:
    """Let glibc reuse freed model buffers of up to 32 MiB instead of asking the kernel anew.

    glibc serves a block above its mmap threshold (128 KiB at start, raised only as such blocks
    are freed) with fresh pages that the kernel must zero on first touch; a CPU forward pass
    frees and reallocates its activations every batch, so at the shipped batch the indexer spent
    more time in the kernel than computing (issue 16). Fixing the threshold at glibc's 32 MiB
    ceiling, with the trim threshold at twice that, keeps such buffers in the heap and bounds what
    the heap holds on to at 64 MiB; the encoders size their batches so that no activation
    exceeds it (see ``EmbeddedEncoder``). Returns whether it applied: a no-op but on glibc
    Linux, and done once per process. ``configure_torch_threads`` calls it, so every model load
    does.
    """
    if _allocator_configured[0]:
        return True
    _allocator_configured[0] = True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    applied = mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX) == 1
    return bool(applied and mallopt(_M_TRIM_THRESHOLD, 2 * _MMAP_THRESHOLD_MAX) == 1)


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

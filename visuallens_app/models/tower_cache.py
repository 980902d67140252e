"""What the cached CLIP towers (``clip_text.py``, ``clip_image.py``) share: an entry's name, the
check that a safetensors checkpoint already holds a tower's weights, and the atomic write.

An entry is a folder in the cache directory holding a JSON description of the tower and its
weights, either a reference to the user's safetensors checkpoint (when it holds exactly those
tensors under open_clip's names, so nothing is copied) or a safetensors file of its own.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any


def entry_key(*parts: object, checkpoint: Path) -> str:
    """An entry's name: ``parts`` (format, encoder id, open_clip's version, ...) and the
    checkpoint file as it is now (its real path, size and mtime)."""
    stat = checkpoint.stat()
    named = [*parts[:2], str(checkpoint.resolve()), stat.st_size, stat.st_mtime_ns, *parts[2:]]
    return hashlib.sha256(json.dumps(named).encode()).hexdigest()[:20]


def read_config(directory: Path, config_name: str, format_: int) -> dict[str, Any] | None:
    """An entry's JSON description, or None when it is missing, damaged or of another format."""
    try:
        config = json.loads((directory / config_name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict) or config.get("format") != format_:
        return None
    return config


def holds(source: Path, state: dict[str, Any]) -> bool:
    """Whether the safetensors file ``source`` has every tensor of ``state``, bit for bit."""
    if source.suffix != ".safetensors":
        return False
    import torch
    from safetensors import safe_open

    try:
        with safe_open(str(source), framework="pt") as handle:
            names = set(handle.keys())
            return all(
                name in names and torch.equal(handle.get_tensor(name), tensor)
                for name, tensor in state.items()
            )
    except (OSError, RuntimeError, ValueError):
        return False


def write_entry(
    directory: Path,
    config: dict[str, Any],
    config_name: str,
    weights_name: str,
    *,
    source: Path,
    state: dict[str, Any],
    also: Callable[[Path], object] | None = None,
) -> bool:
    """Write an entry: ``config`` (with where its weights are) as ``config_name``, the weights
    referenced in ``source`` or saved beside it as ``weights_name``, and whatever ``also`` puts
    in the folder.

    Written to a temporary folder renamed at the end, so a crash never leaves half an entry.
    False when the disk refused.
    """
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.with_name(f".{directory.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        if holds(source, state):
            config["weights"] = {"file": str(source.resolve())}
        else:
            from safetensors.torch import save_file

            save_file({k: v.contiguous() for k, v in state.items()}, str(tmp / weights_name))
            config["weights"] = {"file": weights_name}
        if also is not None:
            also(tmp)
        (tmp / config_name).write_text(json.dumps(config, indent=1), encoding="utf-8")
        os.replace(tmp, directory)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        return False
    return True

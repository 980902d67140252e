"""ONNX Runtime for a CPU forward pass, where the benchmark shows it beating PyTorch eager.

On the 2-core development CPU ONNX Runtime ran the embedded encoder's EfficientNet-Lite0 3.6x
faster than PyTorch eager (77 vs 21 photos/s, vectors at cosine 0.9999999), and CLIP ViT-B-32
no faster (0.99x), so only the former uses it (``benchmarks/bench_runtime.py``). It is optional:
installed with the ``onnx`` extra (``pip install visuallens-studio[onnx]``), used when present
unless ``VISUALLENS_RUNTIME=torch``. The model is exported once into the cache directory and
checked against PyTorch on a probe batch before it is trusted; anything that goes wrong means
PyTorch, never a failure.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

log = logging.getLogger(__name__)

#: The cosine every output row must reach against PyTorch's before the export is used.
MIN_COSINE = 0.999


def wanted() -> bool:
    """Whether ONNX Runtime may be used: installed (with onnx, for the export) and not refused."""
    if os.environ.get("VISUALLENS_RUNTIME", "").strip().lower() == "torch":
        return False
    return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnx"))


class OnnxForward:
    """One exported model run by ONNX Runtime on a CPU: float32 array in, float32 array out."""

    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, threads)
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # warnings about unused initialisers are not the user's
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.path = path

    def __call__(self, batch: NDArray[np.float32]) -> NDArray[np.float32]:
        (out,) = self._session.run(None, {"input": np.ascontiguousarray(batch, np.float32)})
        return np.asarray(out, dtype=np.float32)


def _cosines(a: NDArray[np.float32], b: NDArray[np.float32]) -> NDArray[np.float32]:
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return np.asarray((a * b).sum(axis=1), dtype=np.float32)


def onnx_forward(module: Any, probe: Any, path: Path, threads: int) -> OnnxForward | None:
    """``module`` (a torch model in eval mode) as an ONNX Runtime forward, or None.

    Exports to ``path`` when it is not there yet (atomically: a killed export leaves nothing),
    then runs ``probe`` (a torch batch) through both and keeps the export only if every row
    agrees to :data:`MIN_COSINE`. None when onnx/onnxruntime are missing or anything fails.
    """
    try:
        import torch

        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".onnx")
            os.close(fd)
            try:
                with torch.no_grad(), contextlib.redirect_stdout(None), warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    torch.onnx.export(
                        module,
                        (probe,),
                        tmp,
                        input_names=["input"],
                        output_names=["output"],
                        dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                        opset_version=17,
                        dynamo=False,
                    )
                os.replace(tmp, path)
            finally:
                Path(tmp).unlink(missing_ok=True)
        forward = OnnxForward(path, threads)
        with torch.inference_mode():
            expected = module(probe).float().cpu().numpy()
        got = forward(probe.contiguous().cpu().numpy())
        if got.shape != expected.shape or float(_cosines(got, expected).min()) < MIN_COSINE:
            log.warning("The ONNX export %s disagrees with PyTorch; using PyTorch", path)
            path.unlink(missing_ok=True)
            return None
        return forward
    except Exception as err:  # an optional speed-up: any failure means PyTorch
        log.warning("ONNX Runtime not used (%s: %s); using PyTorch", type(err).__name__, err)
        return None

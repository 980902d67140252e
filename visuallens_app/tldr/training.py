"""Training the reward model: per-token BCE on labelled captions, as a cancellable, resumable job.

The data is the perturbation engine's labelled JSONL, one record per line: ``text``, ``tokens``
(words with character offsets), ``labels`` (1 good, 0 bad per word), ``category``, ``source`` and
``image`` (a path, relative to the JSONL's folder unless absolute); an optional ``prompt``. Word
labels reach the model's own tokens by character overlap: a token is bad when it overlaps a bad
word. The paper's loss is binary cross-entropy on every response token; ``naive=True`` is its
baseline, the loss on the last token only, labelled with the response's label (good when every
word is good).

AdamW (lr 1e-3), cosine decay after a linear warm-up (the paper's 200 steps, capped at a tenth of
the run so a small data set still decays). A checkpoint is written into ``OUT/checkpoint`` after
every epoch and when the job is cancelled (between steps, so it is consistent), and a new run with
the same data and settings continues from it: the shuffling is seeded per epoch and the random
state is saved, so a resumed run takes the same steps as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from visuallens_app.errors import Cancelled, VisualLensError, first_sentence
from visuallens_app.jobs import CancelToken, Partial, ProgressMeter, StreamingJob
from visuallens_app.tldr.reward import DEFAULT_PROMPT, HEAD_FILE, LoraSettings, RewardModel

if TYPE_CHECKING:
    from visuallens_app.vlm.loading import VisionLanguageModel

log = logging.getLogger(__name__)

#: The paper's warm-up; a run shorter than ten times this warms up for a tenth of its steps.
PAPER_WARMUP_STEPS = 200

CHECKPOINT_DIR = "checkpoint"


class TrainingDataError(VisualLensError):
    """The training data or the output folder cannot be used as given."""


@dataclass(frozen=True, slots=True)
class LabelledExample:
    """One usable record: the caption, its image, and its bad words' character spans."""

    text: str
    image: Path
    bad_spans: tuple[tuple[int, int], ...]
    category: str = ""
    source: str = ""
    prompt: str = ""
    line: int = 0

    @property
    def good(self) -> bool:
        """The response-level label: good when no word is bad."""
        return not self.bad_spans


def token_labels(
    offsets: Sequence[tuple[int, int]], bad_spans: Sequence[tuple[int, int]]
) -> list[int]:
    """1 (good) or 0 (bad) per model token: bad when its span overlaps a bad word's."""
    return [
        0 if any(start < bad_end and bad_start < end for bad_start, bad_end in bad_spans) else 1
        for start, end in offsets
    ]


@dataclass(frozen=True, slots=True)
class DataWarning(Partial):
    """A partial result: one sentence about a line of the data that was skipped."""

    message: str


@dataclass(frozen=True, slots=True)
class EpochFinished(Partial):
    """A partial result: an epoch's mean token loss, after its checkpoint was written."""

    epoch: int  # 1-based
    epochs: int
    loss: float
    step: int


@dataclass(frozen=True, slots=True)
class TrainingConfig:
    """How to train; everything here must match for a run to resume another's checkpoint."""

    epochs: int = 3
    batch_size: int = 4
    lr: float = 1e-3
    warmup_steps: int | None = None  # None: the paper's 200, capped at a tenth of the run
    naive: bool = False
    lora: LoraSettings | None = None
    seed: int = 0
    prompt: str = DEFAULT_PROMPT

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["lora"] = self.lora.as_json() if self.lora else None
        return data


@dataclass(frozen=True)
class TrainingResult:
    """A finished run: where the reward model is, its steps and losses, what was skipped."""

    folder: Path
    steps: int
    resumed_from: int  # 0 for a fresh run
    epoch_losses: tuple[float, ...]
    metrics: dict[str, Any]
    warnings: tuple[str, ...] = field(default=())


def data_hash(path: Path) -> str:
    """A hash of the data file's bytes (what the metadata records and a resume checks)."""
    digest = hashlib.blake2b(digest_size=16)
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_examples(path: Path) -> tuple[list[LabelledExample], list[str]]:
    """The usable records of a labelled JSONL file, and one sentence per skipped line."""
    path = Path(path)
    if not path.is_file():
        raise TrainingDataError(f"There is no training data at {path}.")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise TrainingDataError(
            f"The training data {path} cannot be read ({first_sentence(err)})."
        ) from err
    examples: list[LabelledExample] = []
    warnings: list[str] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            examples.append(_example(json.loads(line), path.parent, number))
        except ValueError as err:  # json.JSONDecodeError is a ValueError too
            reason = str(err) if isinstance(err, _BadRecordError) else "it is not valid JSON"
            warnings.append(f"Line {number} of {path.name} was skipped: {reason}.")
    return examples, warnings


class _BadRecordError(ValueError):
    """Why a record is unusable, as the end of a sentence."""


def _example(record: Any, folder: Path, line: int) -> LabelledExample:
    if not isinstance(record, dict):
        raise _BadRecordError("it is not a JSON object")
    text = record.get("text")
    if not isinstance(text, str) or not text.strip():
        raise _BadRecordError('it has no "text"')
    words, labels = record.get("tokens"), record.get("labels")
    if not isinstance(words, list) or not isinstance(labels, list) or len(words) != len(labels):
        raise _BadRecordError('its "tokens" and "labels" are not two lists of the same length')
    bad: list[tuple[int, int]] = []
    for word, label in zip(words, labels, strict=True):
        start = word.get("start") if isinstance(word, dict) else None
        end = word.get("end") if isinstance(word, dict) else None
        if (
            not isinstance(start, int)
            or not isinstance(end, int)
            or not 0 <= start <= end <= len(text)
        ):
            raise _BadRecordError("a token has no valid character offsets into the text")
        if label not in (0, 1) or isinstance(label, bool):
            raise _BadRecordError("a label is neither 0 (bad) nor 1 (good)")
        if label == 0:
            bad.append((start, end))
    image = record.get("image")
    if not isinstance(image, str) or not image:
        raise _BadRecordError('it names no "image"')
    image_path = Path(image).expanduser()
    if not image_path.is_absolute():
        image_path = folder / image_path
    try:
        with Image.open(image_path) as opened:
            opened.draft("RGB", (64, 64))  # a JPEG decodes at 1/8 scale: a cheap full check
            opened.load()
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise _BadRecordError(f"its image {image} cannot be read ({first_sentence(err)})") from err
    prompt = record.get("prompt")
    return LabelledExample(
        text,
        image_path,
        tuple(bad),
        str(record.get("category") or ""),
        str(record.get("source") or ""),
        prompt if isinstance(prompt, str) else "",
        line,
    )


def open_image(example: LabelledExample) -> Image.Image:
    try:
        with Image.open(example.image) as opened:
            return opened.convert("RGB")
    except (OSError, ValueError) as err:
        raise TrainingDataError(
            f"The image {example.image} (line {example.line}) cannot be read any more "
            f"({first_sentence(err)})."
        ) from err


@dataclass
class BatchLoss:
    """The mean loss of a batch (a tensor with grad) and what went into it."""

    loss: Any
    tokens: int
    correct: int


def batch_loss(
    reward: RewardModel,
    examples: Sequence[LabelledExample],
    images: Sequence[Image.Image],
    *,
    naive: bool,
) -> BatchLoss:
    """BCE on every response token, or (``naive``) on each response's last token only."""
    import torch

    prompts = [example.prompt or reward.prompt for example in examples]
    scored = reward.forward(images, prompts, [example.text for example in examples])
    logits, targets = [], []
    for example, row_logits, tokens in zip(examples, scored.logits, scored.tokens, strict=True):
        if naive:
            logits.append(row_logits[-1:])
            targets.append([float(example.good)])
        else:
            logits.append(row_logits)
            targets.append([float(v) for v in token_labels(tokens.offsets, example.bad_spans)])
    flat = torch.cat(logits)
    target = torch.tensor([v for row in targets for v in row], device=flat.device)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(flat, target)
    correct = int(((flat.detach() > 0).float() == target).sum())
    return BatchLoss(loss, int(target.numel()), correct)


def train_reward_model(
    vlm: VisionLanguageModel,
    data: Path,
    out: Path,
    config: TrainingConfig | None = None,
    *,
    cancel: CancelToken | None = None,
) -> StreamingJob[TrainingResult]:
    """Train a reward model on ``data`` into ``out``, resuming ``out``'s checkpoint (module doc)."""
    import numpy as np
    import torch

    config = config or TrainingConfig()
    cancel = cancel or CancelToken()
    data, out = Path(data), Path(out)
    if config.epochs < 1 or config.batch_size < 1 or config.lr <= 0:
        raise TrainingDataError(
            "Training needs at least one epoch, a batch of at least one and a positive "
            "learning rate."
        )
    examples, warnings = load_examples(data)
    for warning in warnings:
        log.warning(warning)
        yield DataWarning(warning)
    if not examples:
        raise TrainingDataError(
            f"{data} holds no usable labelled record, so there is nothing to train on."
        )
    digest = data_hash(data)
    reward = RewardModel(vlm, naive=config.naive, prompt=config.prompt)
    torch.manual_seed(config.seed)  # LoRA's initial weights and its dropout; resumed below
    if config.lora is not None:
        reward.add_lora(config.lora)
    params = reward.trainable_parameters()
    optimizer = torch.optim.AdamW(params, lr=config.lr)
    per_epoch = math.ceil(len(examples) / config.batch_size)
    total = config.epochs * per_epoch
    warmup = (
        config.warmup_steps
        if config.warmup_steps is not None
        else min(PAPER_WARMUP_STEPS, max(1, total // 10))
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _cosine_with_warmup(warmup, total))
    identity = {
        "data_hash": digest,
        "config": config.as_json(),
        "base": {"family": vlm.family, "hidden_size": vlm.hidden_size},
    }
    checkpoint = Checkpoint(out / CHECKPOINT_DIR, reward, optimizer, scheduler)
    state = checkpoint.load(identity)
    resumed_from = int(state["step"])
    done = resumed_from
    meter = ProgressMeter(total, stage="train", unit="steps")
    meter.done = done
    yield meter.progress("resuming" if done else "starting")
    reward.train(True)
    stepping = False
    try:
        for step in range(resumed_from, total):
            cancel.check()
            epoch, index = divmod(step, per_epoch)
            order = np.random.default_rng(config.seed + epoch).permutation(len(examples))
            chosen = [
                examples[i]
                for i in order[index * config.batch_size : (index + 1) * config.batch_size]
            ]
            parts = batch_loss(reward, chosen, [open_image(e) for e in chosen], naive=config.naive)
            stepping = True  # from here until the state is updated, an interrupt is unsafe
            optimizer.zero_grad(set_to_none=True)
            parts.loss.backward()
            optimizer.step()
            scheduler.step()
            state["loss_sum"] += float(parts.loss.detach()) * parts.tokens
            state["tokens"] += parts.tokens
            state["correct"] += parts.correct
            done = state["step"] = step + 1
            stepping = False
            meter.done = done
            if index == per_epoch - 1:
                loss = state["loss_sum"] / max(1, state["tokens"])
                state["epoch_losses"].append(loss)
                state["last_accuracy"] = state["correct"] / max(1, state["tokens"])
                state.update(loss_sum=0.0, tokens=0, correct=0)
                checkpoint.save(state)
                yield EpochFinished(epoch + 1, config.epochs, loss, done)
            # Every step: a step of a real model takes a second or more, so this stays well
            # under the ~10 updates per second the front-ends want.
            loss_now = float(parts.loss.detach())
            yield meter.progress(f"epoch {epoch + 1}/{config.epochs}, loss {loss_now:.4f}")
    except (Cancelled, GeneratorExit, KeyboardInterrupt):
        # Between steps (a cancel, a closed job, Ctrl-C outside an update) the state is
        # consistent, so nothing done so far is lost; inside an update the last one stands.
        if not stepping and done > checkpoint.saved_step:
            checkpoint.save(state)
        raise
    finally:
        reward.train(False)
    metrics = {
        "final_loss": state["epoch_losses"][-1] if state["epoch_losses"] else None,
        "epoch_losses": list(state["epoch_losses"]),
        "train_token_accuracy": state.get("last_accuracy"),
        "records": len(examples),
        "skipped_lines": len(warnings),
        "bad_words": sum(len(e.bad_spans) for e in examples),
        "steps": total,
        "warmup_steps": warmup,
    }
    reward.save(
        out,
        {
            "data": str(data.resolve()),
            "data_hash": digest,
            "metrics": metrics,
            "training": config.as_json(),
        },
    )
    return TrainingResult(
        out, total, resumed_from, tuple(state["epoch_losses"]), metrics, tuple(warnings)
    )


def _cosine_with_warmup(warmup: int, total: int) -> Any:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


class Checkpoint:
    """``OUT/checkpoint``: head and adapter weights (safetensors), optimizer, scheduler and
    random state (``torch.save``, read back with ``weights_only=True``), and ``state.json``."""

    def __init__(self, folder: Path, reward: RewardModel, optimizer: Any, scheduler: Any) -> None:
        self.folder = folder
        self.reward = reward
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.saved_step = 0

    def load(self, identity: dict[str, Any]) -> dict[str, Any]:
        """The saved training state (weights restored), or a fresh one when there is none."""
        import torch
        from safetensors.torch import load_file

        fresh: dict[str, Any] = {
            **identity,
            "step": 0,
            "epoch_losses": [],
            "loss_sum": 0.0,
            "tokens": 0,
            "correct": 0,
        }
        old = self.folder.with_name(self.folder.name + ".old")
        if not self.folder.exists() and old.is_dir():  # interrupted between the two renames
            old.rename(self.folder)
        state_file = self.folder / "state.json"
        if not state_file.is_file():
            return fresh
        try:
            state = json.loads(state_file.read_text(encoding="utf-8"))
            for key in ("data_hash", "config", "base"):
                if state.get(key) != identity[key]:
                    what = {"data_hash": "data", "config": "settings", "base": "base model"}[key]
                    raise TrainingDataError(
                        f"{self.folder} holds a checkpoint of a run with other {what}; choose "
                        "another --out folder, or delete that checkpoint to start over."
                    )
            device = str(self.reward.vlm.device)
            self.reward.head.load_state_dict(load_file(str(self.folder / HEAD_FILE), device=device))
            if self.reward.peft_model is not None:
                from peft import set_peft_model_state_dict

                adapter = load_file(str(self.folder / "adapter.safetensors"), device=device)
                set_peft_model_state_dict(self.reward.peft_model, adapter)
            extra = torch.load(self.folder / "optimizer.pt", map_location=device, weights_only=True)
            self.optimizer.load_state_dict(extra["optimizer"])
            self.scheduler.load_state_dict(extra["scheduler"])
            torch.set_rng_state(extra["rng"])
        except TrainingDataError:
            raise
        except (OSError, ValueError, KeyError, RuntimeError) as err:
            raise TrainingDataError(
                f"The checkpoint in {self.folder} cannot be read ({first_sentence(err)}); delete "
                "it to start over."
            ) from err
        self.saved_step = int(state["step"])
        log.info("Resuming the training in %s from step %d", self.folder, self.saved_step)
        return dict(state)

    def save(self, state: dict[str, Any]) -> None:
        """Write the state into a new folder, then swap it in: a checkpoint is whole or absent."""
        import shutil

        new = self.folder.with_name(self.folder.name + ".new")
        old = self.folder.with_name(self.folder.name + ".old")
        shutil.rmtree(new, ignore_errors=True)
        self._write(new, state)
        if self.folder.exists():
            shutil.rmtree(old, ignore_errors=True)
            self.folder.rename(old)
        new.rename(self.folder)
        shutil.rmtree(old, ignore_errors=True)
        self.saved_step = int(state["step"])

    def _write(self, folder: Path, state: dict[str, Any]) -> None:
        import torch
        from safetensors.torch import save_file

        folder.mkdir(parents=True)
        head = {k: v.detach().cpu().contiguous() for k, v in self.reward.head.state_dict().items()}
        save_file(head, str(folder / HEAD_FILE))
        if self.reward.peft_model is not None:
            from peft import get_peft_model_state_dict

            adapter = get_peft_model_state_dict(self.reward.peft_model)
            save_file(
                {k: v.detach().cpu().contiguous() for k, v in adapter.items()},
                str(folder / "adapter.safetensors"),
            )
        torch.save(
            {
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "rng": torch.get_rng_state(),
            },
            folder / "optimizer.pt",
        )
        (folder / "state.json").write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")


__all__ = [
    "DataWarning",
    "EpochFinished",
    "LabelledExample",
    "TrainingConfig",
    "TrainingDataError",
    "TrainingResult",
    "batch_loss",
    "data_hash",
    "load_examples",
    "token_labels",
    "train_reward_model",
]

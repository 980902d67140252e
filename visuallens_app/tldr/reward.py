"""The paper's token-level reward model: a local VLM without its LM head, plus a linear token head.

TLDR (arXiv 2410.04734) removes the language-model head of a vision-language model and puts a
linear head h: R^D -> R (D + 1 parameters) on the last hidden state of every *response* token;
P(token is good) = sigmoid(h(hidden)). Here the hidden state is the backbone's
``last_hidden_state`` (``vlm.model.model``, the model without ``lm_head``), which is taken *after*
the language model's final norm, as in the paper: the same tensor as
``output_hidden_states=True``'s last entry, without computing vocabulary logits (a 256k-token
vocabulary would cost more than the whole head). :func:`visuallens_app.vlm.layers.capture_layers`
gives the output *before* the norm and is not used here.

LoRA (peft, the paper's rank 512 / alpha 128 / dropout 0.1 by default) goes on every linear layer
of the vision->text projector and of the language decoder; the vision tower is never adapted.
peft injects the adapter into the loaded model in place, so every ``vlm/`` function (attention
maps included) runs the adapted model.

A saved reward model is a folder: ``head.safetensors``, ``adapter/`` (peft ``save_pretrained``,
absent without LoRA) and ``reward.json`` (base model source and fingerprint, data hash, metrics,
naive flag). torch, transformers, peft and safetensors are imported inside the functions.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from visuallens_app.errors import VisualLensError, first_sentence
from visuallens_app.tldr.detector import TokenScore, TokenScores
from visuallens_app.vlm.prompts import ResponseTokens, encode, tokenize_response

if TYPE_CHECKING:
    from visuallens_app.vlm.loading import VisionLanguageModel

log = logging.getLogger(__name__)

#: What the model is asked before the response it judges (DOCCI-style captions).
DEFAULT_PROMPT = "Describe this image in detail."

#: Responses are cut to this many tokens (the rest reported as not checked, with a warning).
MAX_RESPONSE_TOKENS = 1024

#: Files of a saved reward model.
HEAD_FILE = "head.safetensors"
ADAPTER_DIR = "adapter"
METADATA_FILE = "reward.json"
FORMAT = "visuallens-tldr-reward"

#: Last names of the module that maps vision features into the language model, by family.
PROJECTOR_NAMES = ("multi_modal_projector", "connector", "merger", "mm_projector", "projector")
#: Last names of the vision encoder's module.
VISION_NAMES = ("vision_tower", "visual", "vision_model", "vision_encoder")


class RewardModelError(VisualLensError):
    """A reward model cannot be built, loaded or asked what was asked."""


@dataclass(frozen=True, slots=True)
class LoraSettings:
    """LoRA on the projector and the language decoder; the defaults are the paper's."""

    rank: int = 512
    alpha: int = 128
    dropout: float = 0.1

    def as_json(self) -> dict[str, int | float]:
        return {"rank": self.rank, "alpha": self.alpha, "dropout": self.dropout}


@dataclass(frozen=True, slots=True)
class ScoredBatch:
    """Head logits of a batch: ``logits[i]`` (1-D tensor) for the tokens of ``tokens[i]``."""

    logits: list[Any]
    tokens: list[ResponseTokens]
    cut: list[int]  # tokens left out of each response (beyond MAX_RESPONSE_TOKENS)


def _top_module(model: Any, names: Sequence[str]) -> str | None:
    """The shortest dotted path whose last part is one of ``names`` (None when none is)."""
    found = [n for n, _ in model.named_modules() if n.rsplit(".", 1)[-1] in names]
    return min(found, key=len) if found else None


def projector_path(model: Any) -> str | None:
    """The vision->text projector's module path (Qwen2-VL's merger sits inside ``visual``)."""
    return _top_module(model, PROJECTOR_NAMES)


def vision_tower_path(model: Any) -> str | None:
    """The vision encoder's module path."""
    return _top_module(model, VISION_NAMES)


def lora_targets(model: Any) -> list[str]:
    """Every linear layer of the language decoder and of the projector, by full name."""
    import torch

    from visuallens_app.vlm.layers import decoder_layer_path

    prefixes = [decoder_layer_path(model) + "."]
    projector = projector_path(model)
    if projector is not None:
        prefixes.append(projector + ".")
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and name.startswith(tuple(prefixes))
    ]


class RewardModel:
    """A :class:`~visuallens_app.tldr.detector.TokenDetector`: P(good) per response token.

    A ``naive`` model (trained on the last token only) still scores every token, but only its
    last token's P(good) was trained: that is its verdict on the whole response.

    ``heatmaps``: draw each token's attention over the image (one more forward pass per
    response); ``None`` means when the model was loaded with eager attention.
    """

    def __init__(
        self,
        vlm: VisionLanguageModel,
        *,
        naive: bool = False,
        prompt: str = DEFAULT_PROMPT,
        heatmaps: bool | None = None,
        metadata: dict[str, Any] | None = None,
        warnings: Sequence[str] = (),
    ) -> None:
        import torch

        self.vlm = vlm
        self.naive = naive
        self.prompt = prompt
        self.heatmaps = vlm.attn_implementation == "eager" if heatmaps is None else heatmaps
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.warnings = tuple(warnings)
        # Zeros: P(good) = 0.5 everywhere until trained; deterministic without a seed.
        # The base weights never train: only the head, and LoRA when added.
        vlm.model.requires_grad_(False)
        self.head = torch.nn.Linear(vlm.hidden_size, 1, dtype=torch.float32, device=vlm.device)
        with torch.no_grad():
            self.head.weight.zero_()
            self.head.bias.zero_()
        self.peft_model: Any = None
        self.lora: LoraSettings | None = None

    @property
    def id(self) -> str:
        return f"reward:{self.vlm.name}" + (":naive" if self.naive else "")

    # --- LoRA -------------------------------------------------------------------------------

    def add_lora(self, settings: LoraSettings) -> None:
        """Wrap the model's projector and decoder in a trainable LoRA adapter (module doc)."""
        from peft import LoraConfig, get_peft_model

        if self.peft_model is not None:
            raise RewardModelError("This reward model already has a LoRA adapter.")
        if settings.rank < 1 or settings.alpha <= 0 or not 0 <= settings.dropout < 1:
            raise RewardModelError(
                f"LoRA needs a rank of at least 1, a positive alpha and a dropout in [0, 1); got "
                f"rank {settings.rank}, alpha {settings.alpha}, dropout {settings.dropout}."
            )
        config = LoraConfig(
            r=settings.rank,
            lora_alpha=settings.alpha,
            lora_dropout=settings.dropout,
            target_modules=lora_targets(self.vlm.model),
            bias="none",
        )
        self.peft_model = get_peft_model(self.vlm.model, config)
        self.lora = settings

    def load_adapter(self, folder: Path) -> None:
        """Apply a saved adapter (inference only)."""
        from peft import PeftModel

        try:
            self.peft_model = PeftModel.from_pretrained(self.vlm.model, folder, is_trainable=False)
        except (OSError, ValueError, KeyError, RuntimeError) as err:
            raise RewardModelError(
                f"The LoRA adapter in {folder} does not fit {self.vlm.name}: {first_sentence(err)}."
            ) from err
        config = self.peft_model.peft_config["default"]
        self.lora = LoraSettings(int(config.r), int(config.lora_alpha), float(config.lora_dropout))

    def lora_module_names(self) -> list[str]:
        """Names (in the VLM's module tree) of the modules LoRA adapted."""
        return [
            name
            for name, module in self.vlm.model.named_modules()
            if hasattr(module, "lora_A") and len(getattr(module, "lora_A", ())) > 0
        ]

    def trainable_parameters(self) -> list[Any]:
        """The head's parameters, then LoRA's (a fixed order, so optimizer states resume)."""
        params = list(self.head.parameters())
        if self.peft_model is not None:
            params += [p for n, p in self.vlm.model.named_parameters() if "lora_" in n]
        return params

    def train(self, mode: bool = True) -> None:
        """Training mode for the adapter's dropout; the base weights stay frozen either way."""
        self.vlm.model.train(mode and self.peft_model is not None)
        self.head.train(mode)

    # --- scoring ---------------------------------------------------------------------------

    def batch_inputs(
        self,
        images: Sequence[Image.Image],
        prompts: Sequence[str],
        responses: Sequence[str],
    ) -> tuple[dict[str, Any], list[ResponseTokens], list[int]]:
        """One padded batch: each row is its prompt, then its response, then right padding.

        The processor pads prompts on the left; each row's padding is moved to the right after
        the response, so every real token has the position it has alone (batched scores equal
        one-at-a-time scores) and attention masks hide the padding.
        """
        import torch

        vlm = self.vlm
        inputs = encode(vlm, list(prompts), [[image] for image in images])
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        sequence_keys = [
            key
            for key, value in inputs.items()
            if hasattr(value, "shape")
            and value.ndim == 2
            and tuple(value.shape) == tuple(ids.shape)
            and not value.is_floating_point()
        ]
        pad_id = vlm.tokenizer.pad_token_id
        pad_id = 0 if pad_id is None else int(pad_id)
        rows: dict[str, list[Any]] = {key: [] for key in sequence_keys}
        tokens: list[ResponseTokens] = []
        cut: list[int] = []
        for row, response in enumerate(responses):
            token_ids, offsets = tokenize_response(vlm, response)
            cut.append(max(0, len(token_ids) - MAX_RESPONSE_TOKENS))
            token_ids, offsets = token_ids[:MAX_RESPONSE_TOKENS], offsets[:MAX_RESPONSE_TOKENS]
            real = mask[row].bool()
            start = int(real.sum())
            extra = torch.tensor(token_ids, dtype=ids.dtype, device=ids.device)
            for key in sequence_keys:
                value = inputs[key][row][real]
                fill = (
                    extra
                    if key == "input_ids"
                    else torch.full_like(extra, int(key == "attention_mask"))
                )
                rows[key].append(torch.cat([value, fill.to(value.dtype)]))
            tokens.append(ResponseTokens(response, tuple(token_ids), tuple(offsets), start))
        length = max(len(r) for r in rows["input_ids"])
        batched = dict(inputs)
        for key in sequence_keys:
            fill_value = pad_id if key == "input_ids" else 0
            padded = torch.full(
                (len(responses), length), fill_value, dtype=ids.dtype, device=ids.device
            )
            for row, value in enumerate(rows[key]):
                padded[row, : len(value)] = value
            batched[key] = padded
        return batched, tokens, cut

    def hidden(self, inputs: dict[str, Any]) -> Any:
        """The final-normed last hidden states ``[batch, seq, D]`` (module doc)."""
        model = self.vlm.model
        backbone = getattr(model, "model", None)
        if backbone is not None and hasattr(model, "lm_head"):
            out = backbone(**inputs, use_cache=False)
            state = getattr(out, "last_hidden_state", None)
            if state is not None:
                return state
        return model(**inputs, use_cache=False, output_hidden_states=True).hidden_states[-1]

    def forward(
        self,
        images: Sequence[Image.Image],
        prompts: Sequence[str],
        responses: Sequence[str],
    ) -> ScoredBatch:
        """Head logits of every response token, one forward pass for the batch (with grads
        when called outside ``torch.no_grad``)."""
        inputs, tokens, cut = self.batch_inputs(images, prompts, responses)
        states = self.hidden(inputs)
        logits = []
        for row, response_tokens in enumerate(tokens):
            span = states[row, response_tokens.start : response_tokens.start + len(response_tokens)]
            logits.append(self.head(span.float())[:, 0])
        return ScoredBatch(logits, tokens, cut)

    def score(self, image: Image.Image, prompt: str, response: str) -> TokenScores:
        """P(good) of every token of ``response`` about ``image`` (empty ``prompt``: default)."""
        return self.score_many([(image, prompt, response)], batch_size=1)[0]

    def score_many(
        self,
        items: Sequence[tuple[Image.Image, str, str]],
        *,
        batch_size: int = 8,
    ) -> list[TokenScores]:
        """Score many (image, prompt, response) triples, one forward pass per ``batch_size``."""
        import torch

        for _, _, response in items:
            if not response.strip():
                raise RewardModelError("There is no text to score: the response is empty.")
        results: list[TokenScores] = []
        self.train(False)
        for first in range(0, len(items), max(1, batch_size)):
            chunk = items[first : first + max(1, batch_size)]
            images = [image.convert("RGB") for image, _, _ in chunk]
            prompts = [prompt or self.prompt for _, prompt, _ in chunk]
            responses = [response for _, _, response in chunk]
            with torch.inference_mode():
                batch = self.forward(images, prompts, responses)
            for row, (image, prompt, response) in enumerate(
                zip(images, prompts, responses, strict=True)
            ):
                probabilities = torch.sigmoid(batch.logits[row]).cpu().tolist()
                results.append(
                    self._scores(
                        image=image,
                        prompt=prompt,
                        response=response,
                        tokens=batch.tokens[row],
                        probabilities=probabilities,
                        cut=batch.cut[row],
                    )
                )
        return results

    def _scores(
        self,
        *,
        image: Image.Image,
        prompt: str,
        response: str,
        tokens: ResponseTokens,
        probabilities: list[float],
        cut: int,
    ) -> TokenScores:
        scored = [
            TokenScore(response[a:b], a, b, float(p), True)
            for (a, b), p in zip(tokens.offsets, probabilities, strict=True)
        ]
        warnings = list(self.warnings)
        if cut:
            # The rest is reported as not checked, so every character of the text has a token.
            _, offsets = tokenize_response(self.vlm, response)
            scored += [
                TokenScore(response[a:b], a, b, None, False) for a, b in offsets[len(tokens) :]
            ]
            warnings.append(
                f"The text was cut to its first {MAX_RESPONSE_TOKENS} tokens; "
                f"the last {cut} were not checked."
            )
        heatmaps = self._heatmaps(image, prompt, tokens) if self.heatmaps and len(tokens) else {}
        return TokenScores(response, tuple(scored), self.id, heatmaps, tuple(warnings))

    def _heatmaps(
        self, image: Image.Image, prompt: str, tokens: ResponseTokens
    ) -> dict[int, NDArray[np.float32]]:
        """Each scored token's attention over the image, painted at the image's size."""
        from visuallens_app.vlm.attention import response_attention

        end = tokens.offsets[-1][1]
        maps = response_attention(self.vlm, image, prompt, tokens.text[:end])
        if len(maps.tokens) != len(tokens):  # a cut at a boundary that tokenises otherwise
            return {}
        return {i: maps.heatmap(i) for i in range(len(tokens))}

    # --- saving ---------------------------------------------------------------------------

    def save(self, folder: Path, metadata: dict[str, Any] | None = None) -> Path:
        """Write head, adapter and metadata into ``folder`` (created); returns the folder."""
        from safetensors.torch import save_file

        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()}
        save_file(state, str(folder / HEAD_FILE))
        if self.peft_model is not None:
            self.peft_model.save_pretrained(str(folder / ADAPTER_DIR))
        data = self.describe() | dict(metadata or {})
        self.metadata = data
        (folder / METADATA_FILE).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        return folder

    def describe(self) -> dict[str, Any]:
        """The metadata that says what this reward model is built on."""
        vlm = self.vlm
        source = str(vlm.folder.resolve()) if Path(vlm.source).exists() else vlm.source
        return {
            **self.metadata,
            "format": FORMAT,
            "version": 1,
            "base_model": {
                "source": source,
                "fingerprint": vlm.fingerprint,
                "family": vlm.family,
                "hidden_size": vlm.hidden_size,
            },
            "prompt": self.prompt,
            "naive": self.naive,
            "lora": self.lora.as_json() if self.lora else None,
        }


def read_metadata(folder: Path) -> dict[str, Any]:
    """``reward.json`` of a saved reward model; one sentence when it is not one."""
    path = Path(folder) / METADATA_FILE
    if not path.is_file():
        raise RewardModelError(
            f"{folder} is not a saved reward model (no {METADATA_FILE}); train one with "
            "`visuallens tldr train`."
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise RewardModelError(f"{path} cannot be read ({first_sentence(err)}).") from err
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise RewardModelError(f"{path} does not describe a TLDR reward model.")
    return data


def load_detector(
    folder: str | Path,
    *,
    vlm: VisionLanguageModel | None = None,
    device: str = "cpu",
    heatmaps: bool | None = None,
) -> RewardModel:
    """A saved reward model, on ``vlm`` or on the base model its metadata names."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    data = read_metadata(folder)
    base = data.get("base_model") or {}
    if vlm is None:
        from visuallens_app.vlm.loading import load_vlm

        vlm = load_vlm(str(base.get("source", "")), device=device)
    if base.get("hidden_size") not in (None, vlm.hidden_size) or base.get("family") not in (
        None,
        vlm.family,
    ):
        raise RewardModelError(
            f"The reward model in {folder} was trained on a {base.get('family')} model with "
            f"hidden size {base.get('hidden_size')}, not on {vlm.name} ({vlm.family}, "
            f"{vlm.hidden_size})."
        )
    warnings = []
    if base.get("fingerprint") and base["fingerprint"] != vlm.fingerprint:
        warnings.append(
            f"The base model's files changed since this reward model was trained on "
            f"{base.get('source')}; its scores may be off."
        )
        log.warning(warnings[-1])
    reward = RewardModel(
        vlm,
        naive=bool(data.get("naive", False)),
        prompt=str(data.get("prompt") or DEFAULT_PROMPT),
        heatmaps=heatmaps,
        metadata=data,
        warnings=warnings,
    )
    try:
        state = load_file(str(folder / HEAD_FILE), device=str(vlm.device))
        reward.head.load_state_dict(state)
    except (OSError, SafetensorError, RuntimeError, KeyError) as err:
        raise RewardModelError(
            f"The head of the reward model in {folder} cannot be read ({first_sentence(err)})."
        ) from err
    if (folder / ADAPTER_DIR).is_dir():
        reward.load_adapter(folder / ADAPTER_DIR)
    reward.train(False)
    return reward


__all__ = [
    "DEFAULT_PROMPT",
    "LoraSettings",
    "RewardModel",
    "RewardModelError",
    "load_detector",
    "lora_targets",
    "projector_path",
    "read_metadata",
    "vision_tower_path",
]

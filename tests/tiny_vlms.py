"""Tiny randomly initialised vision-language models of three families, saved the users' way.

No pretrained VLM weights are reachable offline, so every test of the VLM runtime (and of what
stands on it: captions, re-ranking, hallucination scores, steering) runs on these: LLaVA (CLIP
vision tower + Llama, no chat template: the plain-prompt path), Qwen2-VL (its own vision tower,
dynamic image-token count, a chat template) and Idefics3 (SigLIP-style tower, image tiles plus a
global view, a chat template). Each is built from configs (hidden 32, 2 layers), given a
byte-level BPE tokenizer trained here with ``tokenizers`` (so any text, in any script, has
tokens and character offsets), saved with ``save_pretrained`` and then loaded back by the code
under test through the same ``from_pretrained`` path a downloaded model takes. A few hundred KB
each, about a second to build. They prove mechanics, never the quality of an answer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

FAMILIES = ("llava", "qwen2_vl", "idefics3")

#: Text the tokenizers are trained on: prompt words of the app, captions, a little of other scripts.
CORPUS = [
    "USER: ASSISTANT: The image is a grid of photos from the user's own photo history, each "
    "numbered in its top-left corner. Aspects the user cares about: Photos: Question: Candidates:",
    "Answer with the tag of the candidate this user would like most. Describe this photo in one "
    "short sentence. A cat is sitting on a red chair next to a cup of coffee on the table.",
    "There are three apples in the basket. The dog is under the table. A man in a white space "
    "suit holds a flag. A rocket on the launch pad. A black motorcycle parked near the road.",
    "Is the cat to the left or to the right of the cup? How many birds are there? (A) (B) (C) "
    "(D) yes no left right above below two four five blue green yellow wooden metal glass",
    "0 1 2 3 4 5 6 7 8 9 < > I , ; . ! ? ' \" - : 猫が椅子の上に座っている。 Кошка сидит на стуле.",
]

#: Special tokens every family's tokenizer knows; each family adds its own on top.
BASE_SPECIALS = ["<unk>", "<pad>", "<s>", "</s>"]

QWEN_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% elif part['type'] == 'text' %}"
    "{{ part['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

IDEFICS3_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}"
    "{% elif part['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}"
    "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)


def _tokenizer(specials: list[str], **named: Any) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE(unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=BASE_SPECIALS + specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    raw.train_from_iterator(CORPUS, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=raw,
        unk_token="<unk>",
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        **named,
    )


def _llama(vocab: int, **extra: Any) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        vocab_size=vocab,
        max_position_embeddings=4096,
        **extra,
    )


def build_llava(folder: Path) -> None:
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tokenizer = _tokenizer(["<image>"], extra_special_tokens={"image_token": "<image>"})
    vision = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
        projection_dim=32,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=_llama(len(tokenizer)),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-1,
    )
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(
            size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
        ),
        tokenizer=tokenizer,
        patch_size=8,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )
    _save(LlavaForConditionalGeneration, config, processor, folder)


def build_qwen2_vl(folder: Path) -> None:
    from transformers import (
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    specials = ["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>"]
    specials += ["<|image_pad|>", "<|video_pad|>"]
    tokenizer = _tokenizer(specials)
    tokenizer.eos_token = "<|im_end|>"
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in specials}
    config = Qwen2VLConfig(
        text_config={
            "model_type": "qwen2_vl_text",
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "vocab_size": len(tokenizer),
            "max_position_embeddings": 4096,
            "rope_parameters": {"rope_type": "default", "mrope_section": [2, 2, 4]},
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "depth": 2,
            "embed_dim": 32,
            "hidden_size": 32,
            "num_heads": 2,
            "mlp_ratio": 2,
            "patch_size": 8,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "in_chans": 3,
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=tokenizer.pad_token_id,
    )
    image_processor = Qwen2VLImageProcessor(
        patch_size=8,
        merge_size=2,
        temporal_patch_size=2,
        min_pixels=32 * 32,
        max_pixels=64 * 64,
    )
    video_processor = Qwen2VLVideoProcessor(
        patch_size=8, merge_size=2, temporal_patch_size=2, min_pixels=32 * 32, max_pixels=64 * 64
    )
    processor = Qwen2VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=QWEN_TEMPLATE,
    )
    _save(Qwen2VLForConditionalGeneration, config, processor, folder)


def build_idefics3(folder: Path) -> None:
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessor,
        Idefics3Processor,
        Idefics3VisionConfig,
    )

    grid = [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]
    specials = ["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>"]
    specials += ["<|im_start|>", *grid]
    tokenizer = _tokenizer(specials)
    vision = Idefics3VisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
    )
    config = Idefics3Config(
        vision_config=vision.to_dict(),
        text_config=_llama(len(tokenizer)).to_dict(),
        scale_factor=2,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        pad_token_id=tokenizer.pad_token_id,
    )
    image_processor = Idefics3ImageProcessor(
        size={"longest_edge": 64},
        max_image_size={"longest_edge": 32},
        do_image_splitting=True,
    )
    # (32 / 8) ** 2 patches per tile, merged 2 x 2 by the connector: 4 image tokens per tile.
    processor = Idefics3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_len=4,
        chat_template=IDEFICS3_TEMPLATE,
    )
    _save(Idefics3ForConditionalGeneration, config, processor, folder)


def _save(model_class: Any, config: Any, processor: Any, folder: Path) -> None:
    import torch

    torch.manual_seed(0)
    model = model_class(config)
    model.generation_config.pad_token_id = processor.tokenizer.pad_token_id
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


BUILDERS = {"llava": build_llava, "qwen2_vl": build_qwen2_vl, "idefics3": build_idefics3}


def build(family: str, folder: Path) -> Path:
    """Build the tiny ``family`` model into ``folder`` and return the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    BUILDERS[family](folder)
    return folder


def build_text_only(folder: Path) -> Path:
    """A tiny text-only causal LM folder: what a user might point the VLM setting at by mistake."""
    import torch
    from transformers import LlamaForCausalLM

    tokenizer = _tokenizer([])
    torch.manual_seed(0)
    LlamaForCausalLM(_llama(len(tokenizer))).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder

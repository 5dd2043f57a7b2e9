"""A tiny, randomly initialised Qwen VL model with a locally trained tokenizer.

Nothing can be downloaded on CI machines, so tests and the default run use this model.
It is built once into ``<cache_dir>/tiny_models/<name>-<hash>/`` (``model.cache_dir``, outputs/
by default) and then loaded through exactly the same ``from_pretrained`` path as a real checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from filelock import FileLock

from visionthink.paths import OUTPUTS_DIR

# Qwen2.5-VL's special tokens. `<tool_call>` and `</tool_call>` are ordinary added tokens in
# Qwen (decoding with skip_special_tokens keeps them); the rest are special.
SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
NON_SPECIAL_ADDED_TOKENS = ["<tool_call>", "</tool_call>"]
CHAT_TEMPLATE = (Path(__file__).with_name("chat_template.jinja")).read_text()
CORPUS_FILE = Path(__file__).with_name("tiny_tokenizer_corpus.json")


@dataclass(frozen=True)
class TinyModelSpec:
    """Sizes of the tiny model; the defaults keep the test suite fast (~0.8M parameters)."""

    text_hidden_size: int = 128
    text_layers: int = 2
    text_heads: int = 4
    text_kv_heads: int = 2
    text_intermediate_size: int = 256
    vision_hidden_size: int = 64
    vision_depth: int = 2
    vision_heads: int = 4
    vision_intermediate_size: int = 128
    vocab_size: int = 1024
    seed: int = 0
    # The model type to build: a family of visionthink.models.family (qwen2_5_vl, qwen3_vl, qwen3_5)
    family: str = "qwen2_5_vl"
    # Standard deviation of the vision tower's learned position grid (Qwen3-VL has one; None: the
    # config's initializer range, 0.02). A trained grid is on the scale of the patch embeddings;
    # at 0.02 the positions are ~1/40 of the content and the tiny model never learns where a
    # detail is (docs/method.md, "Tools")
    vision_position_std: float | None = None

    @property
    def head_dim(self) -> int:
        return self.text_hidden_size // self.text_heads


def tokenizer_corpus() -> list[str]:
    """Text the BPE merges are learned from: the prompt texts in ``tiny_tokenizer_corpus.json``
    plus the synthetic task's words.

    Byte-level BPE encodes any text; the corpus only decides which strings become short. The
    prompt texts are the shipped ``conf/prompt/*.yaml`` files as of the verified miniature, kept
    as data: the tiny model (and so the miniature's base) never changes when a prompt or a
    comment is edited. Changing the file builds a new tiny model; rerun ``make reproduce`` then.
    """
    from visionthink.data.synthetic import vocabulary_lines

    lines = json.loads(CORPUS_FILE.read_text())
    lines += vocabulary_lines()
    lines += [
        "<think>\n",
        "</think>\n",
        "<answer>",
        "</answer>",
        "\\boxed{",
        '{"name": "resize_image", "arguments": {"action": "resize"}}',
    ]
    return lines


def _build_tokenizer(vocab_size: int, corpus: list[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,  # it prints blank lines otherwise
    )
    # Repeating the corpus makes the prompt's frequent strings win merges deterministically.
    backend.train_from_iterator(corpus * 8, trainer)
    backend.add_tokens(NON_SPECIAL_ADDED_TOKENS)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        padding_side="left",
        model_max_length=32768,
        chat_template=CHAT_TEMPLATE,
    )
    return tokenizer


def _spec_hash(spec: TinyModelSpec, corpus: list[str]) -> str:
    # Unset options are left out, so adding one keeps the existing models' folders
    return _hash_of({key: value for key, value in asdict(spec).items() if value is not None}, corpus)


def _hash_of(fields: dict, corpus: list[str]) -> str:
    payload = json.dumps({"spec": fields, "corpus": corpus, "template": CHAT_TEMPLATE}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def ensure_tiny_checkpoint(spec: TinyModelSpec, name: str = "tiny", cache_dir: str | Path | None = None) -> Path:
    """Return the folder of the tiny checkpoint for ``spec``, building it on first use.

    The folder is written to a temporary sibling and renamed into place under a file lock,
    so parallel test workers or DDP ranks never see a half-written model.
    """
    from visionthink.models.family import family_for
    from visionthink.models.loading import save_policy_and_processor

    corpus = tokenizer_corpus()
    cache_dir = Path(cache_dir) if cache_dir is not None else OUTPUTS_DIR / "tiny_models"
    target = cache_dir / f"{name}-{_spec_hash(spec, corpus)}"
    if (target / "video_preprocessor_config.json").exists():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / "video_preprocessor_config.json").exists():
            return target
        family = family_for(spec.family, where="model.tiny.family")
        tokenizer = _build_tokenizer(spec.vocab_size, corpus)
        processor = family.tiny_processor(tokenizer, CHAT_TEMPLATE)
        model = family.tiny_model(spec, tokenizer)
        staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=cache_dir))
        try:
            save_policy_and_processor(model, processor, staging)
            (staging / "tiny_spec.json").write_text(json.dumps(asdict(spec), indent=2))
            os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target

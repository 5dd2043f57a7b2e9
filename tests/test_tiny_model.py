"""The tiny models: built locally, loaded through from_pretrained, Qwen's tokens and chat format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from visionthink.errors import InputError
from visionthink.models import ModelConfig, TinyModelSpec, ensure_tiny_checkpoint, load_policy, load_processor, tiny
from visionthink.models.qwen import mrope_section
from visionthink.models.tiny import NON_SPECIAL_ADDED_TOKENS, SPECIAL_TOKENS
from visionthink.paths import CONF_DIR


def test_checkpoint_is_cached_and_reloads_with_identical_logits(tiny_path, model, processor):
    assert ensure_tiny_checkpoint(TinyModelSpec()) == ensure_tiny_checkpoint(TinyModelSpec())
    reloaded = load_policy(ModelConfig(), tiny_path).eval()
    batch = processor(
        text=["<|vision_start|><|image_pad|><|vision_end|>hi"], images=[Image.new("RGB", (56, 84))], return_tensors="pt"
    )
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, reloaded(**batch).logits)


def test_size_is_configurable(tmp_path):
    spec = TinyModelSpec(
        text_hidden_size=64, text_layers=1, text_heads=2, text_kv_heads=1, vision_depth=1, vocab_size=600
    )
    path = ensure_tiny_checkpoint(spec, name="smaller", cache_dir=tmp_path)
    config = json.loads((path / "config.json").read_text())
    assert config["text_config"]["hidden_size"] == 64
    assert config["text_config"]["num_hidden_layers"] == 1
    assert json.loads((path / "tiny_spec.json").read_text())["vocab_size"] == 600


def test_the_tiny_tokenizer_reads_nothing_under_conf(monkeypatch):
    """Editing a prompt (or a comment in it) must not build a new tiny model and base."""
    read, read_text = [], Path.read_text
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: read.append(self) or read_text(self, *a, **k))
    assert tiny.tokenizer_corpus()
    assert tiny.CORPUS_FILE in read and not [path for path in read if CONF_DIR in path.parents]


def test_the_tiny_model_and_its_base_are_built_under_the_configured_cache(tmp_path):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"paths.cache_dir={tmp_path}", "paths.outputs_dir=/elsewhere"])
    assert cfg.model.cache_dir == str(tmp_path)
    path = Path(ModelConfig(tiny=TinyModelSpec(), cache_dir=cfg.model.cache_dir).resolve_path())
    assert path.parent == tmp_path / "tiny_models" and (path / "config.json").exists()


def test_mrope_section_fills_half_the_head_dim():
    for head_dim, expected in ((128, [16, 24, 24]), (32, [4, 6, 6])):
        assert mrope_section(head_dim) == expected


def test_tokenizer_has_every_qwen_special_token_as_one_token(tokenizer):
    for token in SPECIAL_TOKENS + NON_SPECIAL_ADDED_TOKENS:
        ids = tokenizer(token, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1 and tokenizer.convert_ids_to_tokens(ids[0]) == token
    # Like Qwen, the tool-call tags survive skip_special_tokens; the chat markers do not.
    text = tokenizer.decode(tokenizer("<tool_call>x</tool_call><|im_end|>")["input_ids"], skip_special_tokens=True)
    assert text == "<tool_call>x</tool_call>"


def test_chat_template_renders_system_user_assistant_and_tool_turns_with_images(processor):
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]},
        {"role": "assistant", "content": "<tool_call>{}</tool_call>"},
        {"role": "tool", "content": [{"type": "image"}, {"type": "text", "text": "bigger"}]},
    ]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What is it?<|im_end|>\n"
        "<|im_start|>assistant\n<tool_call>{}</tool_call><|im_end|>\n"
        "<|im_start|>user\n<tool_response>\n<|vision_start|><|image_pad|><|vision_end|>bigger\n</tool_response><|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_processor_expands_each_image_and_reloads_offline(tiny_path):
    processor = load_processor(tiny_path, {"shortest_edge": 3136, "longest_edge": 448 * 448})
    batch = processor(
        text=["<|vision_start|><|image_pad|><|vision_end|>a<|vision_start|><|image_pad|><|vision_end|>"],
        images=[Image.new("RGB", (112, 112)), Image.new("RGB", (224, 224))],
        return_tensors="pt",
    )
    assert int((batch["input_ids"] == processor.image_token_id).sum()) == 16 + 64
    assert batch["image_grid_thw"].tolist() == [[1, 8, 8], [1, 16, 16]]


def test_missing_checkpoint_folder_is_a_clear_error(tmp_path):
    import pytest

    with pytest.raises(FileNotFoundError, match="config.json"):
        load_policy(ModelConfig(name_or_path=str(tmp_path / "nowhere")))


def test_the_tiny_qwen3_vl_is_a_qwen3_vl_with_its_own_processor(qwen3_vl_path, tiny_path):
    config = json.loads((Path(qwen3_vl_path) / "config.json").read_text())
    assert config["model_type"] == "qwen3_vl" and config["vision_config"]["deepstack_visual_indexes"] == [0]
    rope = config["text_config"]["rope_parameters"]
    assert rope["mrope_interleaved"] and sum(rope["mrope_section"]) == config["text_config"]["head_dim"] // 2
    qwen3, qwen2_5 = load_processor(qwen3_vl_path), load_processor(tiny_path)
    assert type(qwen3).__name__ == "ImageOnlyQwen3VLProcessor" and qwen3.image_processor.patch_size == 16
    assert qwen3.tokenizer.get_vocab() == qwen2_5.tokenizer.get_vocab()
    batch = qwen3(text=["<|vision_start|><|image_pad|><|vision_end|>hi"], images=[Image.new("RGB", (64, 96))])
    assert batch["image_grid_thw"].tolist() == [[1, 6, 4]]  # 16 px patches; 2 x 3 tokens of 32 px


def test_a_tiny_family_without_a_module_is_refused_naming_the_setting(tmp_path):
    with pytest.raises(InputError, match=r"model.tiny.family is a 'llava' model"):
        ensure_tiny_checkpoint(TinyModelSpec(family="llava"), cache_dir=tmp_path)


def test_the_tiny_qwen3_5_mixes_gated_deltanet_and_attention_layers(qwen3_5_path):
    from visionthink.models.family import continues_from_shared_caches

    config = json.loads((Path(qwen3_5_path) / "config.json").read_text())
    assert config["model_type"] == "qwen3_5"
    assert config["text_config"]["layer_types"] == ["linear_attention", "full_attention"]
    model = load_policy(ModelConfig(), qwen3_5_path)
    assert not continues_from_shared_caches(model)
    assert type(load_processor(qwen3_5_path)).__name__ == "ImageOnlyQwen3VLProcessor"


def test_the_qwen3_vl_position_grid_can_start_at_the_scale_of_its_patches(tmp_path):
    """The zoom miniature's tiny Qwen3-VL: its learned position grid at std 1 (the config's 0.02
    hides where a patch is); an unset option leaves the other tiny models' folders as they were."""
    plain, placed = TinyModelSpec(family="qwen3_vl"), TinyModelSpec(family="qwen3_vl", vision_position_std=1.0)
    assert tiny._spec_hash(plain, ["corpus"]) != tiny._spec_hash(placed, ["corpus"])
    unset = {key: value for key, value in vars(plain).items() if key != "vision_position_std"}
    assert tiny._spec_hash(plain, ["corpus"]) == tiny._hash_of(unset, ["corpus"])
    grids = [
        load_policy(
            ModelConfig(name_or_path=str(ensure_tiny_checkpoint(spec, cache_dir=tmp_path)))
        ).model.visual.pos_embed.weight
        for spec in (plain, placed)
    ]
    assert float(grids[0].std()) == pytest.approx(0.02, rel=0.1) and float(grids[1].std()) == pytest.approx(
        1.0, rel=0.1
    )

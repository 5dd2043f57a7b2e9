"""A judge served behind an OpenAI-compatible chat API: OpenAI, Azure OpenAI, or ``vllm serve``
on another node (``judge.base_url=http://host:8000/v1``).

Requests run concurrently (bounded), each with a timeout; transient failures (connection errors,
timeouts, HTTP 429 and 5xx, malformed or empty replies) are retried with exponential backoff and
full jitter, honouring ``Retry-After`` on 429. A reply without a verdict line is invalid, never a
guess. Identical requests are answered from a per-run cache. The API key is read from the
environment variable named in the config and never logged.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import openai

from visionthink.errors import InputError
from visionthink.reward.judges.base import Judge, JudgeItem, Verdict
from visionthink.reward.judges.prompts import JudgePrompt

log = logging.getLogger(__name__)
RATE_LIMITED = "rate limited (HTTP 429)"
# httpx (httpx2 under openai 3.x) logs every request (and retry) at INFO; our own warning per
# failed item is enough.
for _client_logger in ("httpx", "httpx2"):
    logging.getLogger(_client_logger).setLevel(logging.WARNING)


@dataclass(frozen=True)
class AzureSettings:
    endpoint: str
    api_version: str = "2024-10-21"


class OpenAIJudge(Judge):
    def __init__(
        self,
        model: str,
        prompt: JudgePrompt,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        azure: AzureSettings | None = None,
        temperature: float = 0.0,
        max_tokens: int = 256,
        max_concurrency: int = 32,
        timeout: float = 60.0,
        max_retries: int = 4,
        backoff_base: float = 1.0,
        backoff_max: float = 30.0,
        retry_unparseable: bool = True,
        cache: bool = True,
        max_invalid_steps: int = 3,
    ):
        super().__init__(max_invalid_steps)
        self.model, self.prompt = model, prompt
        self.temperature, self.max_tokens = temperature, max_tokens
        self.max_retries, self.backoff_base, self.backoff_max = max_retries, backoff_base, backoff_max
        self.retry_unparseable = retry_unparseable
        api_key = os.environ.get(api_key_env)
        if not api_key:
            if base_url is None or azure is not None:
                raise ValueError(f"judge: set the API key in the environment variable {api_key_env}")
            api_key = "EMPTY"  # a self-hosted server (vllm serve) needs none
        if azure is not None:
            self.client = openai.AzureOpenAI(
                azure_endpoint=azure.endpoint,
                api_version=azure.api_version,
                api_key=api_key,
                timeout=timeout,
                max_retries=0,
            )
        else:
            self.client = openai.OpenAI(base_url=base_url, api_key=api_key, timeout=timeout, max_retries=0)
        self.url = azure.endpoint if azure is not None else str(self.client.base_url)
        self.api_key_env = api_key_env
        self.pool = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="judge")
        self._cache: dict[tuple[str, str], Verdict] | None = {} if cache else None
        self._cache_lock = threading.Lock()

    def _judge(self, items: Sequence[JudgeItem]) -> list[Verdict]:
        return list(self.pool.map(self._one, items))

    def _one(self, item: JudgeItem) -> Verdict:
        messages = self.prompt.render(item)
        key = (messages[0]["content"], messages[1]["content"])
        if self._cache is not None:
            with self._cache_lock:
                if key in self._cache:
                    self.count(cache_hits=1)
                    return self._cache[key]
        verdict = self._request(messages)
        if self._cache is not None and verdict.valid:
            with self._cache_lock:
                self._cache[key] = verdict
        return verdict

    def describe(self) -> str:
        return f"the judge at {self.url} (model {self.model})"

    def probe(self) -> None:
        """One request before training, with the configured retries: an unreachable, unauthorised,
        rate-limited or verdict-less judge stops the run at start-up instead of invalidating every
        group for hours."""
        item = JudgeItem(question="What is 2 + 2?", ground_truth="4", prediction="4")
        verdict = self._request(self.prompt.render(item))
        self.take_stats()  # the probe is not part of the run's figures
        if verdict.valid:
            return
        attempts = f"after {self.max_retries + 1} attempts"
        if verdict.reason == RATE_LIMITED:
            raise InputError(
                f"{self.describe()} is rate-limiting requests (HTTP 429) {attempts}",
                "Wait for the limit to reset, or raise judge.max_retries / judge.backoff_max and lower "
                "judge.max_concurrency",
            )
        raise InputError(
            f"{self.describe()} gave no verdict {attempts}: {verdict.reason}",
            f"Start the judge server or fix judge.base_url / judge.model (and the key in ${self.api_key_env}); "
            "judge=rule needs no server",
        )

    def _request(self, messages: list[dict[str, str]]) -> Verdict:
        problem = "no attempt"
        attempts = self.max_retries + 1
        for attempt in range(attempts):
            if attempt:
                self.count(retries=1)
                log.debug("judge %s: retry %d after %s", self.url, attempt, problem)
            self.count(requests=1)
            retry_after = None
            try:
                response = self.client.chat.completions.create(
                    model=self.model, messages=messages, temperature=self.temperature, max_tokens=self.max_tokens
                )
                reply = (response.choices[0].message.content or "") if response.choices else ""
                verdict = self.prompt.parse(reply)
                if verdict is not None:
                    return Verdict(verdict, f"judge replied {reply.strip()[-80:]!r}")
                problem = "empty reply" if not reply.strip() else f"no verdict line in reply {reply.strip()[:120]!r}"
                if not self.retry_unparseable:
                    break
            except openai.RateLimitError as error:
                problem = RATE_LIMITED
                retry_after = _retry_after(error)
            except (openai.APITimeoutError, openai.APIConnectionError) as error:
                problem = f"{type(error).__name__}: {error}"
            except openai.APIStatusError as error:
                problem = f"HTTP {error.status_code}"
                if error.status_code < 500:
                    break  # a bad request or bad credentials will not get better
            except (openai.APIResponseValidationError, ValueError) as error:
                problem = f"malformed response: {error}"
            if attempt < attempts - 1:
                time.sleep(retry_after if retry_after is not None else self._backoff(attempt))
        log.warning("judge %s: no verdict after %d attempts: %s", self.url, attempt + 1, problem)
        return Verdict(None, problem)

    def _backoff(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2^attempt)]."""
        return random.uniform(0.0, min(self.backoff_max, self.backoff_base * 2**attempt))

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.client.close()


def _retry_after(error: openai.RateLimitError) -> float | None:
    value = error.response.headers.get("retry-after") if error.response is not None else None
    try:
        return min(float(value), 60.0) if value is not None else None
    except ValueError:
        return None

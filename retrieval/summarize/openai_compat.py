"""Any OpenAI-compatible chat-completions server (vLLM, TGI, `transformers serve`) serving MedGemma, via httpx."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from retrieval.summarize.base import (
    Summary,
    SummaryBadReplyError,
    SummaryRequest,
    SummaryTimeoutError,
    SummaryTooLongError,
    SummaryUnavailableError,
)
from retrieval.summarize.prompt import build_parts, image_count, openai_messages

log = logging.getLogger(__name__)
RETRY_STATUSES = {500, 502, 503, 504, 429}
CHARS_PER_TOKEN = 3  # a cautious estimate for English medical text (no tokenizer on this side)
DEFAULT_CONTEXT = 8192


class OpenAICompatSummarizer:
    """POST {base_url}/chat/completions with base64 `image_url` parts; retries 5xx and connection errors."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout_seconds: float = 120.0,
        retries: int = 2,
        max_new_tokens: int = 512,
        image_size: int = 896,
        image_tokens: int = 256,
        context_tokens: int | None = None,
        backoff_seconds: float = 0.5,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model_name = model
        self.timeout_seconds = timeout_seconds
        self.retries = retries
        self.max_new_tokens = max_new_tokens
        self.image_size = image_size
        self.image_tokens = image_tokens
        self.context_tokens = context_tokens or DEFAULT_CONTEXT
        self.backoff_seconds = backoff_seconds
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(timeout_seconds, connect=min(10.0, timeout_seconds)),
            transport=transport,
            trust_env=False,  # a hospital proxy must not see prompts meant for the local server
        )

    @property
    def model(self) -> str:
        return self.model_name

    # -- budget --------------------------------------------------------------------------
    def estimate_tokens(self, request: SummaryRequest) -> int:
        """Prompt tokens, estimated: tokens per image (256 for MedGemma) plus text at ~3 characters a token."""
        chars = sum(len(v) for k, v in build_parts(request, 8) if k == "text" and isinstance(v, str))
        return image_count(request) * (self.image_tokens + 4) + chars // CHARS_PER_TOKEN + 200

    def fit(self, request: SummaryRequest) -> SummaryRequest:
        budget = self.context_tokens - self.max_new_tokens
        used = 0
        for fitted in request.shrinking():
            used = self.estimate_tokens(fitted)
            if used <= budget:
                return fitted
        raise SummaryTooLongError(
            f"the prompt needs about {used} tokens but the server leaves {budget} (context "
            f"{self.context_tokens}, MEDSEARCH_SUMMARY_CONTEXT_TOKENS, minus MEDSEARCH_SUMMARY_MAX_NEW_TOKENS="
            f"{self.max_new_tokens}) even with one match"
        )

    # -- requests ------------------------------------------------------------------------
    def _body(self, request: SummaryRequest, stream: bool) -> dict[str, Any]:
        return {
            "model": self.model_name,
            "messages": openai_messages(request, self.image_size),
            "max_tokens": self.max_new_tokens,
            "temperature": 0.0,
            "stream": stream,
        }

    def _refused(self, response: httpx.Response) -> SummaryUnavailableError:
        try:
            detail = response.read().decode("utf-8", "replace").strip()[:300]
        except httpx.HTTPError:
            detail = ""
        hint = {
            401: "the server refused the API key (MEDSEARCH_SUMMARY_API_KEY)",
            403: "the server refused the API key (MEDSEARCH_SUMMARY_API_KEY)",
            404: f"no chat-completions endpoint at {self.url} (MEDSEARCH_SUMMARY_URL should end in /v1) "
            f"or no model {self.model_name!r} (MEDSEARCH_SUMMARY_MODEL)",
        }.get(response.status_code, "the summary server refused the request")
        return SummaryUnavailableError(f"{hint}: HTTP {response.status_code} {detail}".strip())

    def _open(self, body: dict[str, Any], deadline: float) -> httpx.Response:
        """Send the request (streamed response), retrying 5xx and connection errors with backoff."""
        attempt = 0
        while True:
            try:
                response = self._client.send(self._client.build_request("POST", self.url, json=body), stream=True)
            except httpx.TimeoutException as exc:
                raise SummaryTimeoutError(
                    f"the summary server at {self.url} did not answer within {self.timeout_seconds:g} s "
                    "(MEDSEARCH_SUMMARY_TIMEOUT_SECONDS)"
                ) from exc
            except httpx.TransportError as exc:
                failure: str = f"cannot reach the summary server at {self.url}: {type(exc).__name__}: {exc}"
            else:
                if response.status_code < 400:
                    return response
                if response.status_code not in RETRY_STATUSES:
                    error = self._refused(response)
                    response.close()
                    raise error
                failure = f"the summary server at {self.url} failed: HTTP {response.status_code}"
                response.close()
            attempt += 1
            pause = self.backoff_seconds * 2 ** (attempt - 1)
            if attempt > self.retries or time.monotonic() + pause > deadline:
                raise SummaryUnavailableError(
                    f"{failure} (after {attempt} attempt{'s' if attempt > 1 else ''}; MEDSEARCH_SUMMARY_RETRIES)"
                )
            log.warning("summary request failed (%s); retrying in %.1f s", failure, pause)
            time.sleep(pause)

    def summarize(self, request: SummaryRequest) -> Summary:
        deadline = time.monotonic() + self.timeout_seconds
        response = self._open(self._body(request, stream=False), deadline)
        with self._reading(response, "reply"):
            raw = response.read()
        try:
            reply = json.loads(raw)
            text = reply["choices"][0]["message"]["content"]
            usage = reply.get("usage") or {}
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise SummaryBadReplyError(
                f"the summary server's reply is not a chat completion ({type(exc).__name__}): {raw[:200]!r}"
            ) from exc
        if not isinstance(text, str):
            raise SummaryBadReplyError("the summary server's reply has no text content")
        tokens = usage.get("prompt_tokens") if isinstance(usage, dict) else None
        return Summary(
            text=text.strip(),
            compared_ids=request.match_ids,
            model=self.model_name,
            prompt_tokens=int(tokens) if isinstance(tokens, int) else None,
        )

    def _timeout(self) -> SummaryTimeoutError:
        return SummaryTimeoutError(
            f"the summary from {self.url} took longer than {self.timeout_seconds:g} s "
            "(MEDSEARCH_SUMMARY_TIMEOUT_SECONDS)"
        )

    @contextmanager
    def _reading(self, response: httpx.Response, what: str) -> Iterator[None]:
        """Read from the server: a timeout or a broken connection becomes a clear error; the response is closed."""
        try:
            yield
        except httpx.TimeoutException as exc:
            raise self._timeout() from exc
        except httpx.TransportError as exc:
            raise SummaryBadReplyError(f"the summary server broke off its {what}: {exc}") from exc
        finally:
            response.close()

    def stream(self, request: SummaryRequest) -> Iterator[str]:
        """Connects (and retries) now; the returned iterator parses the server-sent events."""
        deadline = time.monotonic() + self.timeout_seconds
        response = self._open(self._body(request, stream=True), deadline)
        return self._events(response, deadline)

    def _events(self, response: httpx.Response, deadline: float) -> Iterator[str]:
        finished = False
        with self._reading(response, "stream"):
            for line in response.iter_lines():
                if time.monotonic() > deadline:
                    raise self._timeout()
                if not line.strip() or line.startswith(":"):
                    continue
                field, _, value = line.partition(":")
                if field != "data":
                    continue
                value = value.strip()
                if value == "[DONE]":
                    finished = True
                    break
                try:
                    event = json.loads(value)
                    choice = event["choices"][0] if event.get("choices") else {}
                    delta = choice.get("delta") or {}
                    text = delta.get("content")
                except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
                    raise SummaryBadReplyError(
                        f"the summary server sent a malformed stream event ({type(exc).__name__}): {value[:200]!r}"
                    ) from exc
                if isinstance(text, str) and text:
                    yield text
                if choice.get("finish_reason"):
                    finished = True
        if not finished:
            raise SummaryBadReplyError("the summary server's stream ended before the reply was complete")

    def close(self) -> None:
        self._client.close()

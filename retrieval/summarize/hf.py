"""MedGemma (or any Gemma 3-style image-text model) through transformers, loaded lazily and once."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

from retrieval.errors import ModelLoadError
from retrieval.hub import load_pretrained, resolve_device
from retrieval.summarize.base import (
    Summary,
    SummaryRequest,
    SummaryTimeoutError,
    SummaryTooLongError,
    SummaryUnavailableError,
)
from retrieval.summarize.prompt import transformers_messages

log = logging.getLogger(__name__)

LOAD_HELP = (
    "To use MedGemma: accept the licence of google/medgemma-4b-it on Hugging Face and run `hf auth login`, "
    "or download it and set MEDSEARCH_SUMMARY_MODEL=/path/to/folder. Without network access, "
    "`medsearch dev make-test-summarizer DIR` builds an offline stand-in (its text is meaningless)."
)


class _Stop:
    """A stopping criterion: the deadline passed, or the reader went away."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.cancelled = threading.Event()
        self.timed_out = False

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        if time.monotonic() > self.deadline:
            self.timed_out = True
        stop = self.timed_out or self.cancelled.is_set()
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)


class TransformersSummarizer:
    """`AutoProcessor` + `AutoModelForImageTextToText`; bf16 on CUDA, float32 on CPU; one generation at a time."""

    def __init__(
        self,
        model_ref: str,
        *,
        device: str = "auto",
        max_new_tokens: int = 512,
        timeout_seconds: float = 120.0,
        context_tokens: int | None = None,
    ) -> None:
        self.model_ref = model_ref
        self.requested_device = device
        self.max_new_tokens = max_new_tokens
        self.timeout_seconds = timeout_seconds
        self.context_limit = context_tokens
        self._load_lock = threading.Lock()
        self._generate_lock = threading.Lock()
        self._model: Any = None
        self._processor: Any = None
        self._device = "cpu"
        self._dtype: Any = None

    @property
    def model(self) -> str:
        return self.model_ref

    # -- loading -------------------------------------------------------------------------
    def load(self) -> None:
        """Load processor and model once (offline-first for local folders)."""
        if self._model is not None:
            return
        with self._load_lock:
            if self._model is not None:
                return
            import torch
            from transformers import AutoModelForImageTextToText, AutoProcessor

            device = resolve_device(self.requested_device, "MEDSEARCH_SUMMARY_DEVICE", SummaryUnavailableError)
            dtype = torch.float32
            if device == "cuda":
                dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            try:
                processor, model = load_pretrained(
                    self.model_ref, AutoProcessor, AutoModelForImageTextToText, help_text=LOAD_HELP
                )
            except ModelLoadError as exc:
                raise SummaryUnavailableError(str(exc)) from exc
            except Exception as exc:
                first = str(exc).splitlines()[0] if str(exc) else ""
                raise SummaryUnavailableError(
                    f"could not load the summary model {self.model_ref!r}: {type(exc).__name__}: {first}. {LOAD_HELP}"
                ) from exc
            if getattr(processor, "image_processor", None) is None or not hasattr(processor, "apply_chat_template"):
                raise SummaryUnavailableError(f"{self.model_ref!r} has no image processor and chat template")
            self._model = model.to(device=device, dtype=dtype).eval()
            self._processor = processor
            self._device = device
            self._dtype = dtype
        log.info(
            "loaded summary model %s on %s (%s, %d px, %d tokens per image, context %d)",
            self.model_ref,
            self._device,
            self._dtype,
            self.image_size,
            self.tokens_per_image,
            self.context_tokens,
        )

    @property
    def image_size(self) -> int:
        """The model's square input side, read from its image processor (896 for MedGemma)."""
        self.load()
        size = self._processor.image_processor.size
        height = getattr(size, "height", None)
        if height is None:
            height = size["height"] if isinstance(size, dict) else size
        return int(height)

    @property
    def tokens_per_image(self) -> int:
        """Soft tokens each image takes in the prompt (256 for MedGemma)."""
        self.load()
        return int(getattr(self._model.config, "mm_tokens_per_image", 0) or self._processor.image_seq_length)

    @property
    def context_tokens(self) -> int:
        """The token budget: the model's context, or the configured limit when that is smaller."""
        self.load()
        config = getattr(self._model.config, "text_config", self._model.config)
        own = int(getattr(config, "max_position_embeddings", 0) or 8192)
        return min(own, self.context_limit) if self.context_limit else own

    # -- prompt --------------------------------------------------------------------------
    def _inputs(self, request: SummaryRequest) -> Any:
        messages = transformers_messages(request, self.image_size)
        return self._processor.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
        )

    def _prepare(self, request: SummaryRequest) -> tuple[SummaryRequest, Any]:
        """Tokenise; drop matches from the end while prompt + answer exceed the context."""
        self.load()
        budget = self.context_tokens - self.max_new_tokens
        used = 0
        for fitted in request.shrinking():
            inputs = self._inputs(fitted)
            used = int(inputs["input_ids"].shape[-1])
            if used <= budget:
                return fitted, inputs
        raise SummaryTooLongError(
            f"the prompt needs {used} tokens but {self.model_ref} leaves {budget} "
            f"(context {self.context_tokens} minus MEDSEARCH_SUMMARY_MAX_NEW_TOKENS={self.max_new_tokens}) "
            "even with one match: lower MEDSEARCH_SUMMARY_MAX_NEW_TOKENS"
        )

    def fit(self, request: SummaryRequest) -> SummaryRequest:
        return self._prepare(request)[0]

    # -- generation ----------------------------------------------------------------------
    def summarize(self, request: SummaryRequest) -> Summary:
        fitted, inputs = self._prepare(request)
        text = "".join(self._generate(inputs))
        return Summary(
            text=text.strip(),
            compared_ids=fitted.match_ids,
            model=self.model_ref,
            prompt_tokens=int(inputs["input_ids"].shape[-1]),
            dropped_ids=request.match_ids[len(fitted.matches) :],
        )

    def stream(self, request: SummaryRequest) -> Iterator[str]:
        _fitted, inputs = self._prepare(request)
        return self._generate(inputs)

    def _generate(self, inputs: Any) -> Iterator[str]:
        """Start generating in a thread (TextIteratorStreamer) and return the iterator over its text."""
        from transformers import StoppingCriteriaList, TextIteratorStreamer

        deadline = time.monotonic() + self.timeout_seconds
        if not self._generate_lock.acquire(timeout=self.timeout_seconds):
            raise SummaryTimeoutError(
                f"the summarizer stayed busy with other summaries for {self.timeout_seconds:g} s "
                "(MEDSEARCH_SUMMARY_TIMEOUT_SECONDS); try again later"
            )
        stop = _Stop(deadline)
        streamer = TextIteratorStreamer(
            self._processor.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=self.timeout_seconds
        )
        failures: list[BaseException] = []
        batch = inputs.to(self._device, dtype=self._dtype)

        def run() -> None:
            import torch

            try:
                with torch.inference_mode():
                    self._model.generate(
                        **batch,
                        streamer=streamer,
                        stopping_criteria=StoppingCriteriaList([stop]),
                        max_new_tokens=self.max_new_tokens,
                        do_sample=False,
                    )
            except Exception as exc:  # reported to the reader below, never lost in the thread
                failures.append(exc)
                streamer.end()
            finally:
                self._generate_lock.release()

        threading.Thread(target=run, name="summary-generate", daemon=True).start()
        return self._read(streamer, stop, failures)

    def _read(self, streamer: Any, stop: _Stop, failures: list[BaseException]) -> Iterator[str]:
        try:
            for text in streamer:
                if text:
                    yield text
        except queue.Empty:
            stop.cancelled.set()
            raise SummaryTimeoutError(
                f"no summary text for {self.timeout_seconds:g} s (MEDSEARCH_SUMMARY_TIMEOUT_SECONDS)"
            ) from None
        finally:
            stop.cancelled.set()  # the reader is gone or done: stop generating
        if failures:
            exc = failures[0]
            raise SummaryUnavailableError(f"the summary model failed: {type(exc).__name__}: {exc}")
        if stop.timed_out:
            raise SummaryTimeoutError(
                f"the summary took longer than {self.timeout_seconds:g} s (MEDSEARCH_SUMMARY_TIMEOUT_SECONDS); "
                "lower MEDSEARCH_SUMMARY_MAX_NEW_TOKENS or MEDSEARCH_SUMMARY_MATCHES"
            )

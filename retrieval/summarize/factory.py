"""build_summarizer(settings): the backend named by MEDSEARCH_SUMMARIZER (none, transformers, openai)."""

from __future__ import annotations

from retrieval.errors import SettingsError
from retrieval.settings import Settings
from retrieval.summarize.base import Summarizer
from retrieval.summarize.service import SummaryService


def check_settings(settings: Settings) -> None:
    """Refuse an incomplete summary configuration at start-up, not at the first summary."""
    if settings.summarizer == "openai" and not settings.summary_url:
        raise SettingsError(
            "MEDSEARCH_SUMMARIZER=openai needs MEDSEARCH_SUMMARY_URL, the server's base URL "
            "(e.g. http://gpu-host:8000/v1 for `vllm serve google/medgemma-4b-it`)"
        )


def build_summarizer(settings: Settings) -> Summarizer | None:
    """The configured backend, not yet loaded or connected; None when summaries are off."""
    if settings.summarizer == "none":
        return None
    if settings.summarizer == "transformers":
        from retrieval.summarize.hf import TransformersSummarizer

        return TransformersSummarizer(
            settings.summary_model,
            device=settings.summary_device,
            max_new_tokens=settings.summary_max_new_tokens,
            timeout_seconds=settings.summary_timeout_seconds,
            context_tokens=settings.summary_context_tokens,
        )
    check_settings(settings)
    assert settings.summary_url is not None
    from retrieval.summarize.openai_compat import OpenAICompatSummarizer

    return OpenAICompatSummarizer(
        settings.summary_url,
        settings.summary_model,
        api_key=settings.summary_api_key,
        timeout_seconds=settings.summary_timeout_seconds,
        retries=settings.summary_retries,
        max_new_tokens=settings.summary_max_new_tokens,
        image_size=settings.summary_image_size,
        image_tokens=settings.summary_image_tokens,
        context_tokens=settings.summary_context_tokens,
    )


def build_summary_service(settings: Settings) -> SummaryService:
    """The summarizer behind its cache (a disabled service when MEDSEARCH_SUMMARIZER=none)."""
    return SummaryService(build_summarizer(settings), settings.summary_cache_size, settings.summarizer)

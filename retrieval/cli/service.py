"""Commands of the query service: serve and key new."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from retrieval.cli.common import DataDir, app, fail, key_app, require_existing, say
from retrieval.errors import MedsearchError, SettingsError

WORKER_PING_SECONDS = 60
WORKERS_HELP = (
    "Worker processes answering on the one port (one per core for several users at once; busy connections are "
    "spread over them). Each opens the collection itself: set MEDSEARCH_INDEX_MMAP=1 to share the index and "
    "vectors' pages (docs/deployment.md)."
)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default $MEDSEARCH_HOST, 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default $MEDSEARCH_PORT, 8000).")] = None,
    data_dir: DataDir = None,
    workers: Annotated[int, typer.Option(min=1, max=64, help=WORKERS_HELP)] = 1,
) -> None:
    """Run the REST API and the web page (uvicorn); refuses to bind beyond loopback without API keys."""
    import os
    import shutil
    import tempfile
    from pathlib import Path

    import uvicorn

    from api.access_log import configure_service_logs, log_config
    from api.app import create_app
    from api.config import ServiceSettings
    from api.worker_balance import WORKER_LOADS, prepare_folder

    settings = ServiceSettings()
    updates: dict[str, Any] = {k: v for k, v in (("host", host), ("port", port), ("data_dir", data_dir)) if v}
    settings = settings.model_copy(update=updates)
    try:
        require_existing(data_dir)
        settings.check_bind()
        app_ = create_app(settings)
    except (MedsearchError, ValueError) as exc:
        fail(exc if isinstance(exc, MedsearchError) else SettingsError(str(exc)))
        return
    if workers > 1:  # uvicorn starts the processes; each builds its app from the environment
        if data_dir:
            os.environ["MEDSEARCH_DATA_DIR"] = str(data_dir)
        loads = Path(tempfile.mkdtemp(prefix="medsearch-workers-"))  # where the workers share their loads
        prepare_folder(loads, workers)
        os.environ[WORKER_LOADS] = str(loads)
        try:
            uvicorn.run(
                "api.app:app_from_environment",
                factory=True,
                workers=workers,
                host=settings.host,
                port=settings.port,
                log_level="info",
                log_config=log_config(),
                # a worker answers uvicorn's ping from a thread that needs the GIL: importing the model's libraries
                # at start, or a long encode, can hold it past the default 5 s, and the worker would be killed as hung
                timeout_worker_healthcheck=WORKER_PING_SECONDS,
            )
        finally:
            shutil.rmtree(loads, ignore_errors=True)
        return
    configure_service_logs()
    uvicorn.run(app_, host=settings.host, port=settings.port, log_level="info", log_config=log_config())


@key_app.command("new")
def key_new(key_id: Annotated[str, typer.Argument(help="A name for the key holder, e.g. 'radiology-ws3'.")]) -> None:
    """Make an API key: prints the key (give it to the client) and the line for MEDSEARCH_API_KEYS."""
    import secrets

    from api.config import hash_key

    if not key_id.replace("-", "").replace("_", "").isalnum():
        raise typer.BadParameter("use letters, digits, '-' and '_' only")
    key = secrets.token_urlsafe(32)
    say(f"key: {key}\nadd to MEDSEARCH_API_KEYS (comma-separated): {key_id}:{hash_key(key)}")

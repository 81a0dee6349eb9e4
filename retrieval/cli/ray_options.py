"""The `--ray` options shared by `index` and `pull`, and the per-actor lines of their summaries."""

from __future__ import annotations

import contextlib
import sys
from typing import Annotated, Any

import typer

from retrieval.cli.common import out

UseRay = Annotated[
    bool,
    typer.Option(
        "--ray",
        help="Decode and embed on a Ray cluster (a local Ray instance unless --ray-address names a running one).",
    ),
]
RayAddress = Annotated[
    str | None,
    typer.Option(
        "--ray-address",
        metavar="ADDRESS",
        help="A running Ray cluster (host:6379 or ray://host:10001); implies --ray.",
    ),
]
RayActors = Annotated[
    int | None,
    typer.Option("--ray-actors", min=1, help="Encoder actors (default: one per GPU; 2 on a cluster without GPUs)."),
]
RayDecoders = Annotated[
    int | None,
    typer.Option(
        "--ray-decoders", min=1, help="Decode slots, each keeping 2 decode tasks in flight (default: free CPUs)."
    ),
]


def ray_output_to_stderr() -> contextlib.AbstractContextManager[Any]:
    """Ray prints its workers' errors (a retried task, a restarted actor) on stdout: keep stdout for the summary."""
    return contextlib.redirect_stdout(sys.stderr)


def driver_settings(settings: Any) -> Any:
    """The driver only checks the model's fingerprint: on the CPU, leaving every GPU to the encoder actors."""
    return settings.model_copy(update={"device": "cpu"})


def ray_report(summary: Any) -> dict[str, Any]:
    """The cluster's shape, start-up time and per-actor throughput, for `--json`."""
    return {
        "encoder_actors": summary.encoder_actors,
        "decode_actors": summary.decode_actors,
        "gpus": summary.gpus,
        "startup_seconds": round(summary.startup_seconds, 3),
        "actors": {
            name: {
                "images": s.images,
                "seconds": round(s.seconds, 3),
                "images_per_second": round(s.images_per_second, 2),
            }
            for name, s in sorted(summary.actors.items())
        },
    }


def print_ray(summary: Any) -> None:
    """One line for the cluster, one per encoder actor process (a restarted actor is a new process)."""
    out.print(
        f"ray: {summary.encoder_actors} encoder actors ({summary.gpus} GPUs), {summary.decode_actors} decode actors; "
        f"first batch after {summary.startup_seconds:.1f} s",
        highlight=False,
    )
    for name, stats in sorted(summary.actors.items()):
        out.print(
            f"  encoder {name}: {stats.images} images, {stats.images_per_second:.1f} img/s while computing",
            highlight=False,
        )

"""`rag ingest`: files and folders into a collection, with progress, a summary and metrics.

A run is not a server that Prometheus could scrape: with `--metrics-file` or `--pushgateway`
it counts what it did in a registry of its own (the service's ingest metrics) and, when it
ends, writes a node_exporter textfile and/or pushes to a Pushgateway. Neither can fail the
ingest: what landed stays landed, a metrics sink that is away is a warning.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from app.cli import remote
from app.cli.console import IngestBar, console, fail, out, progress_bar, start_command
from pipelines.access import parse_groups
from pipelines.errors import InvalidInput
from pipelines.settings import Settings

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from ingest.pipeline import IngestSummary

PUSH_JOB = "ragserve_ingest"
PUSH_TIMEOUT_S = 10.0


def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders (recursive).")],
    collection: Annotated[
        str, typer.Option("--collection", "-c", help="Target collection.")
    ] = "default",
    prune: Annotated[bool, typer.Option(help="Delete documents whose files are gone.")] = False,
    groups: Annotated[
        str,
        typer.Option(
            help="Comma-separated groups that may read these documents, e.g. 'hr,finance' "
            "(default: public; a .jsonl line's own 'groups' wins)."
        ),
    ] = "",
    metrics_file: Annotated[
        Path | None,
        typer.Option(
            "--metrics-file",
            metavar="PATH",
            help="When the run ends (also with failed files), write its metrics in Prometheus "
            "text format to PATH, replacing it atomically: documents by outcome, chunks, "
            "embedding tokens and seconds (ragserve_ingest_*). For node_exporter, put it in "
            "its --collector.textfile.directory with a .prom name.",
        ),
    ] = None,
    pushgateway: Annotated[
        str | None,
        typer.Option(
            "--pushgateway",
            metavar="URL",
            help="When the run ends (also with failed files), push the same metrics to the "
            f"Prometheus Pushgateway at URL (e.g. http://pushgateway:9091), job '{PUSH_JOB}', "
            "grouped by collection (each push replaces the collection's last). A gateway that "
            "is away is a warning, not a failed ingest.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key",
            help="While `rag serve` holds the store, the files are uploaded to it: its API key "
            "(default: RAG_SERVER__API_KEY).",
            show_default=False,
        ),
    ] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log at debug level (default: warnings only).")
    ] = False,
) -> None:
    """Ingest .txt .md .html .pdf .docx and .jsonl corpora; re-runs only embed what changed.

    While `rag serve` runs over the same data dir it holds the store: the files are uploaded
    to it (POST /v1/collections/{collection}/documents), each document named by its file name.

    Exit status: 0 all ingested, 1 some files failed (the rest landed), 2 error.
    """
    start_command(verbose)
    from ingest.job import open_pipeline
    from pipelines.telemetry import NO_TELEMETRY, Telemetry

    try:
        access_list = parse_groups(groups)
    except InvalidInput as exc:
        raise fail(f"--groups: {exc.message}") from exc
    if metrics_file is not None and not metrics_file.parent.is_dir():
        raise fail(f"--metrics-file: no folder {metrics_file.parent} to write {metrics_file.name}")
    settings = Settings()
    registry: CollectorRegistry | None = None
    telemetry: Telemetry = NO_TELEMETRY
    if metrics_file is not None or pushgateway:
        from prometheus_client import CollectorRegistry

        from app.metrics import PrometheusTelemetry

        prometheus = PrometheusTelemetry(CollectorRegistry())
        registry, telemetry = prometheus.registry, prometheus

    async def main() -> IngestSummary:
        async with open_pipeline(settings) as pipeline:
            with progress_bar(as_json, width=44) as bar:
                return await pipeline.run(
                    paths,
                    collection,
                    prune=prune,
                    progress=IngestBar(bar),
                    groups=access_list,
                    telemetry=telemetry,
                )

    def through(service: remote.Service) -> IngestSummary:
        nonlocal registry
        if prune:
            raise fail(
                f"--prune needs the store itself, and the service at {service.url} holds it: "
                "stop the service, or delete documents through it "
                f"(DELETE /v1/collections/{collection}/documents/{{doc_id}})"
            )
        if registry is not None:
            registry = None
            console.print(
                "[yellow]warning[/]: the service ingests, so it counts: its metrics are at "
                f"{service.url}/metrics (no --metrics-file or --pushgateway from this run)",
                soft_wrap=True,
            )
        with progress_bar(as_json, width=44) as bar:
            return remote.upload_paths(service, paths, collection, groups, IngestBar(bar))

    try:
        summary = remote.local_or_service(
            settings, remote.api_key(settings, api_key), main, through
        )
    finally:  # a run that stopped on an error reports what it did up to there
        if registry is not None:
            publish(registry, collection, metrics_file, pushgateway)
    if as_json:
        out.print_json(json.dumps(summary.to_dict()))
    else:
        console.print(
            f"[bold]{collection}[/]: {summary.added} added, {summary.updated} updated, "
            f"{summary.unchanged} unchanged, {summary.deleted} deleted, "
            f"{len(summary.failed)} failed; {summary.chunks} chunks in {summary.seconds:.1f}s"
        )
        for f in summary.failed:
            console.print(f"  [red]failed[/] {f['source']}: {f['reason']}")
        if summary.skipped:
            console.print(f"  [yellow]skipped[/]: {skipped_text(summary.skipped)}", soft_wrap=True)
    if summary.failed:
        raise typer.Exit(code=1)


def skipped_text(skipped: dict[str, int]) -> str:
    """The files a folder held that are not read, as a person counts them: '3 .csv, 1 .pptx
    (not a supported type: .txt, .md, …)', so a missing document is not a mystery."""
    from ingest.loaders import SUPPORTED

    counts = ", ".join(f"{n} {suffix}" for suffix, n in skipped.items())
    return f"{counts} (not a supported type: {', '.join(SUPPORTED)})"


def publish(
    registry: CollectorRegistry, collection: str, path: Path | None, gateway: str | None
) -> None:
    """Write the run's metrics to `path` and push them to `gateway`, each as asked; a failure
    of either is a warning on stderr (the ingest itself is done)."""
    from prometheus_client import push_to_gateway, write_to_textfile

    if path is not None:
        try:
            write_to_textfile(str(path), registry)
        except OSError as exc:
            console.print(f"[yellow]warning[/]: metrics not written to {path}: {exc}")
    if gateway:
        try:
            push_to_gateway(
                gateway,
                job=PUSH_JOB,
                registry=registry,
                grouping_key={"collection": collection},
                timeout=PUSH_TIMEOUT_S,
            )
        except Exception as exc:  # refused, unresolvable, a timeout, an HTTP error, a bad URL
            console.print(
                f"[yellow]warning[/]: metrics not pushed to {gateway}: {type(exc).__name__}: {exc}",
                soft_wrap=True,
            )

"""The `creditline` command: serve, gateway, migrate, worker, catalog, pricebook, stripe
reconcile and token helpers."""

from __future__ import annotations

import argparse
import gc
import hashlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from pydantic import ValidationError

from billing_service import logs
from billing_service.app import SchemaOutOfDate, make_context, open_engine
from billing_service.catalog.catalog_file import CatalogFileError
from billing_service.catalog.commands import pull_catalog, push_catalog, seed_default_catalog
from billing_service.db import migrate
from billing_service.db.engine import build_engine
from billing_service.domain.errors import DomainError
from billing_service.jobs.sweeper import Sweeper
from billing_service.metrics import Metrics
from billing_service.pricing import price_book_file
from billing_service.pricing.price_book_file import DEFAULT_PATH
from billing_service.rpc.auth import ROLES, new_token, parse_tokens
from billing_service.rpc.server import InsecureListenError, build_server
from billing_service.service_layer.pricing import get_price_book, load_price_book, seed_price_book
from billing_service.settings import Settings
from billing_service.stripe.client import build_stripe_client
from webhook_gateway.app import gateway_main
from webhook_gateway.reconcile import main as reconcile_main

log = logging.getLogger("creditline")

# Allocations between runs of the cycle collector (CPython defaults to 700), see _tune_gc.
GC_FIRST_GENERATION = 20_000


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `creditline` console script."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    # The gateway and reconcile belong to webhook_gateway, which reads its own settings and
    # arguments: it talks to this server over gRPC like any client and holds no database.
    if arguments[:1] == ["gateway"]:
        return gateway_main(arguments[1:])
    if arguments[:2] == ["stripe", "reconcile"]:
        return reconcile_main(arguments[2:])
    parser = argparse.ArgumentParser(prog="creditline", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the gRPC server (and background jobs)")
    serve.add_argument("--listen", help="host:port to bind (CREDITLINE_LISTEN)")
    serve.add_argument("--database-url", help="database URL (CREDITLINE_DATABASE_URL)")
    serve.add_argument(
        "--workers", type=int, help="server processes sharing the port (CREDITLINE_WORKERS)"
    )
    commands.add_parser(
        "gateway", help="run the Stripe webhook gateway (see `creditline gateway --help`)"
    )
    stripe_command = commands.add_parser("stripe", help="Stripe maintenance")
    stripe_command.add_subparsers(dest="stripe_command", required=True).add_parser(
        "reconcile",
        help="apply Stripe events the gateway missed (see `creditline stripe reconcile --help`)",
    )
    catalog = commands.add_parser("catalog", help="sync credit packages and plans with Stripe")
    catalog_commands = catalog.add_subparsers(dest="catalog_command", required=True)
    push = catalog_commands.add_parser(
        "push", help="load a catalog file and create or update its Products and Prices in Stripe"
    )
    push.add_argument(
        "--file", type=Path, help="catalog file (.json, .yaml or .yml; default: the shipped one)"
    )
    catalog_commands.add_parser(
        "pull", help="import the prices that carry includedCredits metadata from Stripe"
    )
    commands.add_parser("migrate", help="bring the database schema to the newest revision")
    worker = commands.add_parser("worker", help="run only the background jobs")
    worker.add_argument("--once", action="store_true", help="one pass, then exit")
    book = commands.add_parser("pricebook", help="load or export the price book (charge matrix)")
    book_commands = book.add_subparsers(dest="pricebook_command", required=True)
    load = book_commands.add_parser("load", help="load a JSON or YAML file as a new version")
    load.add_argument("file", type=Path, help="the price book file (.json, .yaml or .yml)")
    load.add_argument(
        "--effective", type=_timestamp, help="ISO time the version starts to apply (default: now)"
    )
    load.add_argument("--note", default="", help="why, kept with the version")
    export = book_commands.add_parser("export", help="write a version as JSON or YAML")
    export.add_argument("--version", type=int, default=0, help="version number (default: in force)")
    export.add_argument("--format", choices=["json", "yaml"], default="json")
    export.add_argument("--output", type=Path, help="file to write (default: standard output)")
    token = commands.add_parser("token", help="create an auth token and its config entry")
    token.add_argument("--name", required=True, help="who the token is for, e.g. api-gateway")
    token.add_argument("--roles", required=True, help=f"'+'-separated roles from {sorted(ROLES)}")
    args = parser.parse_args(arguments)

    overrides = {
        key: value
        for key, value in {
            "listen": getattr(args, "listen", None),
            "database_url": getattr(args, "database_url", None),
            "workers": getattr(args, "workers", None),
        }.items()
        if value
    }
    try:
        settings = Settings(**overrides)
    except ValidationError as error:
        print(f"creditline: bad configuration:\n{error}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level, settings.log_format)
    return _dispatch(settings, args)


def _dispatch(settings: Settings, args: argparse.Namespace) -> int:  # noqa: PLR0911
    """Run the chosen command; expected failures become a logged line and exit status 1."""
    if args.command == "token":
        return _token(args.name, args.roles)
    if args.command == "migrate":
        engine = build_engine(settings.database_url, pool_size=1)
        migrate.upgrade(engine)
        log.info("database schema is current")
        return 0
    try:
        if args.command == "pricebook":
            return _pricebook(settings, args)
        if args.command == "catalog":
            return _catalog(settings, args)
        if args.command == "worker":
            return _worker(settings, once=args.once)
        return _serve(settings)
    except (
        SchemaOutOfDate,
        InsecureListenError,
        ValueError,
        OSError,
        DomainError,
        CatalogFileError,
    ) as error:
        log.error(str(error))
        return 1


def _token(name: str, roles: str) -> int:
    token, digest = new_token()
    entry = f"{name}:{roles}:{digest}"
    parse_tokens(entry)
    print(f"token (give it to the caller, store it nowhere else): {token}")
    print(f"CREDITLINE_AUTH_TOKENS entry (hash only):            {entry}")
    return 0


def _serve(settings: Settings) -> int:
    # Handlers first: a SIGTERM that arrives as soon as "serving" is logged must still drain.
    stop = _stop_on_signal()
    tokens = parse_tokens(settings.auth_tokens)
    engine = open_engine(settings)
    ctx = make_context(engine, settings)
    if settings.seed_default_price_book and seed_price_book(
        ctx, price_book_file.read(DEFAULT_PATH)
    ):
        log.info("loaded the shipped default price book as version 1")
    if settings.seed_default_catalog and seed_default_catalog(ctx.db, ctx.clock):
        log.info("loaded the shipped default catalog (not yet pushed to Stripe)")
    if settings.workers > 1:
        engine.dispose()
        return _supervise_workers(settings, stop)
    metrics = _start_metrics(settings)
    running = build_server(
        ctx,
        listen=settings.listen,
        tokens=tokens,
        max_workers=settings.max_workers,
        reuse_port=settings.reuse_port,
        metrics=metrics,
    )
    host = settings.listen.rpartition(":")[0]
    log.info(
        "serving",
        extra={"address": f"{host}:{running.port}", "auth": bool(tokens), "pid": os.getpid()},
    )
    sweeper = Sweeper(
        ctx,
        interval=settings.sweep_interval_seconds,
        batch=settings.sweep_batch,
        retention=settings.idempotency_retention,
        metrics=metrics,
    )
    if settings.run_jobs:
        sweeper.start()
    _tune_gc()
    stop.wait()
    log.info("shutting down", extra={"grace_seconds": settings.shutdown_grace_seconds})
    running.stop(settings.shutdown_grace_seconds)
    sweeper.stop()
    engine.dispose()
    log.info("stopped")
    return 0


def _tune_gc() -> None:
    """Keep the garbage collector off the request path as far as memory allows.

    Everything alive once serving starts (modules, gRPC, SQLAlchemy's caches) lives for the
    process: frozen, later full collections no longer walk it. Requests make many short-lived
    objects that reference counting frees; a larger first generation runs the cycle collector
    less often. Measured on a group-commit flush of 30 spends: about 20 % less time.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_FIRST_GENERATION, 20, 20)


def _supervise_workers(settings: Settings, stop: threading.Event) -> int:
    """Run settings.workers `serve` processes on one port (SO_REUSEPORT) until signalled.

    The schema, catalog and price book are settled here first, so the workers do not race on
    them; one worker runs the background jobs. A worker that dies takes the others down with
    it: a half-sized fleet on a port that looks healthy is worse than a restart.
    """
    host, _, port = settings.listen.rpartition(":")
    reservation = None
    if port == "0":
        # Reserve a concrete port for all workers; this socket never listens, so the kernel
        # hands no connection to it.
        reservation = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        reservation.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        reservation.bind((host.strip("[]"), 0))
        port = str(reservation.getsockname()[1])
    address = f"{host}:{port}"
    children = []
    for index in range(settings.workers):
        env = {
            **os.environ,
            "CREDITLINE_LISTEN": address,
            "CREDITLINE_DATABASE_URL": settings.database_url,
            "CREDITLINE_WORKERS": "1",
            "CREDITLINE_REUSE_PORT": "true",
            "CREDITLINE_SEED_DEFAULT_PRICE_BOOK": "false",
            "CREDITLINE_SEED_DEFAULT_CATALOG": "false",
            "CREDITLINE_RUN_JOBS": str(settings.run_jobs and index == 0).lower(),
            "CREDITLINE_METRICS_LISTEN": _nth_port(settings.metrics_listen, index),
        }
        children.append(
            subprocess.Popen([sys.executable, "-m", "billing_service.cli", "serve"], env=env)
        )
    log.info("supervising workers", extra={"address": address, "workers": settings.workers})
    while not stop.wait(1.0):
        if any(child.poll() is not None for child in children):
            log.error("a worker exited; stopping the others")
            break
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    codes = []
    for child in children:
        try:
            codes.append(child.wait(timeout=settings.shutdown_grace_seconds + 10))
        except subprocess.TimeoutExpired:
            child.kill()
            codes.append(child.wait())
    if reservation is not None:
        reservation.close()
    log.info("stopped", extra={"worker_exit_codes": codes})
    return 0 if stop.is_set() and all(code == 0 for code in codes) else 1


def _start_metrics(settings: Settings) -> Metrics | None:
    """Metrics exported on CREDITLINE_METRICS_LISTEN, or None (and no cost) when it is unset."""
    if not settings.metrics_listen:
        return None
    metrics = Metrics()
    log.info("metrics", extra={"address": metrics.serve(settings.metrics_listen)})
    return metrics


def _nth_port(listen: str, index: int) -> str:
    """Worker index's metrics address: the given port plus index (0 stays 0: each picks one)."""
    if not listen:
        return ""
    host, _, port = listen.rpartition(":")
    return listen if port == "0" else f"{host}:{int(port) + index}"


def _pricebook(settings: Settings, args: argparse.Namespace) -> int:
    engine = open_engine(settings)
    ctx = make_context(engine, settings)
    try:
        if args.pricebook_command == "load":
            raw = args.file.read_bytes()
            book = price_book_file.read(args.file)
            book = replace(book, note=args.note or book.note or f"loaded from {args.file.name}")
            # The key is what the operator gave (file, --effective, --note), not the time of the
            # run, so loading the same file again is recognised and creates nothing.
            given = f"{args.effective.isoformat() if args.effective else 'now'}|{args.note}"
            digest = hashlib.sha256(raw + b"|" + given.encode())
            outcome = load_price_book(
                ctx,
                book=book,
                effective_at=args.effective,
                idempotency_key=f"pricebook-load:{digest.hexdigest()}",
            )
            info = outcome.result.price_book
            verb = "was already loaded as" if outcome.replayed else "loaded as"
            print(
                f"{args.file} {verb} price book version {info.version}: {info.model_count} "
                f"models, {info.tier_count} tiers, effective {info.effective_at.isoformat()}"
            )
            return 0
        current = get_price_book(ctx, args.version)
        text = price_book_file.dump(current, yaml_syntax=args.format == "yaml")
        if args.output:
            args.output.write_text(text, encoding="utf-8")
            print(f"price book version {current.version} written to {args.output}")
        else:
            sys.stdout.write(text)
        return 0
    except price_book_file.PriceBookFileError as error:
        print(f"creditline: {error}; nothing was loaded", file=sys.stderr)
        return 1
    finally:
        engine.dispose()


def _catalog(settings: Settings, args: argparse.Namespace) -> int:
    engine = open_engine(settings)
    ctx = make_context(engine, settings)
    stripe_client = build_stripe_client(settings)
    try:
        if args.catalog_command == "push":
            report = push_catalog(ctx.db, stripe_client, args.file, ctx.clock, print)
            print(
                f"catalog pushed: {len(report.created)} created, {len(report.updated)} updated, "
                f"{len(report.unchanged)} unchanged"
            )
        else:
            items = pull_catalog(ctx.db, stripe_client, ctx.clock, print)
            print(f"imported {len(items)} catalog items from Stripe")
    finally:
        engine.dispose()
    return 0


def _timestamp(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError("give a time zone, e.g. 2026-12-01T00:00:00Z")
    return moment


def _worker(settings: Settings, *, once: bool) -> int:
    stop = _stop_on_signal()
    engine = open_engine(settings)
    sweeper = Sweeper(
        make_context(engine, settings),
        interval=settings.sweep_interval_seconds,
        batch=settings.sweep_batch,
        retention=settings.idempotency_retention,
        metrics=_start_metrics(settings),
    )
    if once:
        while sweeper.run_once().more:
            pass
        return 0
    sweeper.start()
    log.info("worker running")
    stop.wait()
    sweeper.stop()
    engine.dispose()
    return 0


def _stop_on_signal() -> threading.Event:
    """An event that SIGINT or SIGTERM sets, replacing the default of dying at once."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


if __name__ == "__main__":
    sys.exit(main())

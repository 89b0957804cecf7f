"""``pyomni serve`` and the small commands that call a running server.

``serve`` runs :func:`grpc_server.serve` and ``token`` edits its token file;
``route``, ``quote``, ``confirm``, ``release``, ``reservation``, ``stock``,
``nearby`` and ``sale`` call it through
:class:`pyomni.Client` and print JSON (one object per answer), so a person can
try the service from a shell and a script can parse what it prints. A failed
call prints the error's reason, field and message to stderr and exits 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import json
import sys
from typing import Any

from . import errors

DEFAULT_ADDRESS = "127.0.0.1:50051"


def _jsonable(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.name
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if hasattr(value, "available") and "available" not in out:
            out["available"] = value.available
        return out
    if hasattr(value, "as_dict"):
        return _jsonable(value.as_dict())
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _print(value: Any) -> None:
    print(json.dumps(_jsonable(value), ensure_ascii=False, indent=2))


def _point(text: str) -> tuple[float, float]:
    try:
        lat, lon = (float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LAT,LON, got {text!r}") from None
    return lat, lon


def _line(text: str) -> tuple[str, int]:
    sku, _, qty = text.rpartition(":")
    if not sku:
        return text, 1
    try:
        return sku, int(qty)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected SKU[:QTY], got {text!r}") from None


def _client(args: argparse.Namespace) -> Any:
    from .client import Client

    return Client(args.address, timeout=args.timeout, token=args.token, tls=args.tls, ca=args.tls_ca,
                  cert=args.tls_cert, key=args.tls_key, server_name=args.tls_server_name,
                  insecure=args.insecure)


def _serve(args: argparse.Namespace) -> int:
    from grpc_server import ServerConfig, serve

    config = ServerConfig(address=args.address, data_dir=args.data_dir, fsync=args.fsync,
                          fsync_interval_ms=args.fsync_interval_ms, workers=args.workers,
                          max_message_bytes=args.max_message_mb * 1024 * 1024, metrics_port=args.metrics_port,
                          metrics_host=args.metrics_host,
                          snapshot_every_s=args.snapshot_every,
                          snapshot_records=args.snapshot_records, grace_s=args.grace, stores=args.stores,
                          warehouses=args.warehouses, skus=args.skus, seed=args.seed,
                          tls_cert=args.tls_cert or "", tls_key=args.tls_key or "",
                          tls_client_ca=args.tls_client_ca or "", tokens=args.tokens or "", insecure=args.insecure)
    return serve(config)


def _order(args: argparse.Namespace) -> Any:
    from .model import Order

    if args.to is None and args.pickup is None:
        raise errors.InvalidOrder("give --to LAT,LON (delivery) or --pickup LOCATION", field="destination")
    return Order(args.order_id, tuple(args.line), destination=args.to, pickup_location=args.pickup,
                 channel=args.channel, max_splits=args.max_splits)


def _route(args: argparse.Namespace) -> int:
    with _client(args) as client:
        allocation = client.route_order(_order(args), request_id=args.request_id)
        _print(allocation)
        if args.confirm and allocation.reservation_id:
            _print(client.confirm(allocation.reservation_id))
    return 0


def _quote(args: argparse.Namespace) -> int:
    with _client(args) as client:
        _print(client.quote(_order(args)))
    return 0


def _confirm(args: argparse.Namespace) -> int:
    with _client(args) as client:
        _print(client.confirm(args.reservation_id, request_id=args.request_id))
    return 0


def _release(args: argparse.Namespace) -> int:
    with _client(args) as client:
        _print(client.release(args.reservation_id, request_id=args.request_id))
    return 0


def _reservation(args: argparse.Namespace) -> int:
    with _client(args) as client:
        _print(client.reservation(args.reservation_id))
    return 0


def _stock(args: argparse.Namespace) -> int:
    with _client(args) as client:
        if args.location:
            _print(client.stock(args.location, args.sku))
        else:
            _print({"sku": args.sku, "available": client.available(args.sku, channel=args.channel),
                    "locations": client.availability(args.sku)[: args.limit]})
    return 0


def _nearby(args: argparse.Namespace) -> int:
    with _client(args) as client:
        _print(client.available_near(args.sku, args.near, radius_km=args.radius, limit=args.limit))
    return 0


def _store_quota(text: str) -> tuple[str, int]:
    store, _, quota = text.rpartition(":")
    try:
        return store, int(quota)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected STORE:QUOTA, got {text!r}") from None


def _sale(args: argparse.Namespace) -> int:
    import time

    from .flash import FlashSale

    with _client(args) as client:
        if args.action == "create":
            start = time.time() + args.starts_in
            sale = FlashSale(args.sale_id, tuple(args.sku), start, start + args.minutes * 60.0, args.quota,
                             tuple(args.store), customer_limit=args.customer_limit, pay_window=args.pay_window,
                             earmark=not args.no_earmark, max_km=args.max_km, title=args.title)
            _print(client.create_sale(sale, request_id=args.request_id))
        elif args.action == "show":
            sale, counters = client.sale(args.sale_id)
            _print({"sale": sale, "counters": counters})
        elif args.action == "end":
            _print(client.end_sale(args.sale_id, request_id=args.request_id))
        elif args.action == "claim":
            _print(client.claim(args.sale_id, args.customer, args.sku[0], args.qty, store=args.at, near=args.near,
                                request_id=args.request_id))
        else:
            claim = (client.confirm_claim if args.action == "pay" else client.release_claim)(
                args.sale_id, request_id=args.request_id)
            _print(claim)
    return 0


def _calling(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", default=DEFAULT_ADDRESS, help=f"server host:port (default {DEFAULT_ADDRESS})")
    parser.add_argument("--timeout", type=float, default=5.0, help="deadline of each call in seconds")
    parser.add_argument("--token", help="bearer token (default: $PYOMNI_TOKEN)")
    parser.add_argument("--tls", action="store_true", help="connect over TLS (implied by --tls-ca/--tls-cert)")
    parser.add_argument("--tls-ca", metavar="PEM", help="CA the server's certificate must chain to "
                                                        "(default: the system's roots)")
    parser.add_argument("--tls-cert", metavar="PEM", help="client certificate, for mutual TLS")
    parser.add_argument("--tls-key", metavar="PEM", help="client key, for mutual TLS")
    parser.add_argument("--tls-server-name", metavar="NAME", help="name the server's certificate must carry, "
                                                                  "if not the host of --address")
    parser.add_argument("--insecure", action="store_true", help="send a token in plain text off this machine")


def _order_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("order_id", help="order id")
    parser.add_argument("--line", "-l", type=_line, action="append", required=True, metavar="SKU[:QTY]",
                        help="an order line (repeat for more)")
    parser.add_argument("--to", type=_point, metavar="LAT,LON", help="delivery address")
    parser.add_argument("--pickup", metavar="LOCATION", help="click-and-collect at this store")
    parser.add_argument("--channel", default="app")
    parser.add_argument("--max-splits", type=int)


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``serve`` and the client commands to the ``pyomni`` command's subparsers."""
    p = subparsers.add_parser("serve", help="run the gRPC server (demo network of real Chinese cities by default)",
                              description="Run the pyomni gRPC server. State lives in --data-dir: recovered at "
                                          "start (newest snapshot + journal), journaled before every answer, "
                                          "snapshotted periodically and on SIGTERM/SIGINT. A new directory starts "
                                          "from a demo network of real Chinese cities with demo stock.")
    p.add_argument("--address", default=DEFAULT_ADDRESS, help=f"host:port to listen on (default {DEFAULT_ADDRESS})")
    p.add_argument("--data-dir", default="data", help="data directory: snapshots and journal (default ./data)")
    p.add_argument("--fsync", choices=("always", "interval", "never"), default="always",
                   help="when a mutation is answered: always = its journal record is on disk (default); "
                        "interval = written to the OS, synced every --fsync-interval-ms; never = written in the "
                        "background")
    p.add_argument("--fsync-interval-ms", type=float, default=5.0, help="sync period of --fsync interval")
    p.add_argument("--workers", type=int, default=64,
                   help="handler threads (waiting callers cost no CPU; concurrent claims are batched)")
    p.add_argument("--max-message-mb", type=int, default=16, help="largest message in MiB")
    p.add_argument("--metrics-port", type=int, default=9464, help="Prometheus HTTP port (0 = off)")
    p.add_argument("--metrics-host", default="", help="where metrics listen (plain HTTP; default: --address's "
                                                      "host if loopback, else 127.0.0.1)")
    p.add_argument("--snapshot-every", type=float, default=60.0, help="seconds between snapshots (0 = at exit only)")
    p.add_argument("--snapshot-records", type=int, default=100_000,
                   help="also snapshot after this many journal records, bounding recovery (0 = by time only)")
    p.add_argument("--grace", type=float, default=10.0, help="seconds in-flight calls get at shutdown")
    p.add_argument("--stores", type=int, default=500, help="demo network: stores")
    p.add_argument("--warehouses", type=int, default=8, help="demo network: warehouses")
    p.add_argument("--skus", type=int, default=20_000, help="demo network: SKUs")
    p.add_argument("--seed", type=int, default=7, help="demo network and stock seed")
    p.add_argument("--tls-cert", metavar="PEM", help="serve TLS with this certificate chain (reloaded on change)")
    p.add_argument("--tls-key", metavar="PEM", help="the certificate's private key")
    p.add_argument("--tls-client-ca", metavar="PEM", help="mutual TLS: clients need a certificate this CA signed")
    p.add_argument("--tokens", metavar="FILE", help="bearer tokens and roles (pyomni token new writes it; "
                                                    "default $PYOMNI_TOKENS; neither: every caller is admin)")
    p.add_argument("--insecure", action="store_true",
                   help="allow plain text or no tokens on an address other than loopback or a Unix socket")
    p.set_defaults(run=_serve)

    p = subparsers.add_parser("route", help="route an order on a running server and hold its stock")
    _order_options(p)
    p.add_argument("--request-id", help="idempotency key (default: a new UUID)")
    p.add_argument("--confirm", action="store_true", help="confirm the reservation straight away")
    _calling(p)
    p.set_defaults(run=_route)

    p = subparsers.add_parser("quote", help="where an order would ship from, holding nothing")
    _order_options(p)
    _calling(p)
    p.set_defaults(run=_quote)

    for name, run, text in (("confirm", _confirm, "confirm a HELD reservation"),
                            ("release", _release, "release a HELD reservation")):
        p = subparsers.add_parser(name, help=text)
        p.add_argument("reservation_id")
        p.add_argument("--request-id", help="idempotency key (default: a new UUID)")
        _calling(p)
        p.set_defaults(run=run)

    p = subparsers.add_parser("reservation", help="show one reservation")
    p.add_argument("reservation_id")
    _calling(p)
    p.set_defaults(run=_reservation)

    p = subparsers.add_parser("stock", help="a stock cell (LOCATION given) or a SKU's availability")
    p.add_argument("sku")
    p.add_argument("location", nargs="?")
    p.add_argument("--channel")
    p.add_argument("--limit", type=int, default=20, help="most locations listed")
    _calling(p)
    p.set_defaults(run=_stock)

    p = subparsers.add_parser("sale", help="flash sales: create, show, end; claim, pay and cancel claims",
                              description="A merchandiser's flash sales on a running server. create: SKUs, "
                                          "window, global quota, the stores with their quotas, a per-customer "
                                          "limit and a pay window. claim: hold units for a member at a store "
                                          "(--at) or the nearest one (--near).")
    p.add_argument("action", choices=("create", "show", "end", "claim", "pay", "cancel"))
    p.add_argument("sale_id", help="sale id (claim id for pay and cancel)")
    p.add_argument("--sku", action="append", default=[], help="a SKU of the sale (repeat for more)")
    p.add_argument("--quota", type=int, default=0, help="units the whole sale may sell")
    p.add_argument("--store", type=_store_quota, action="append", default=[], metavar="STORE:QUOTA",
                   help="a pickup store and its quota (repeat for more)")
    p.add_argument("--customer-limit", type=int, default=1)
    p.add_argument("--pay-window", type=float, default=900.0, help="seconds a claim waits for payment")
    p.add_argument("--starts-in", type=float, default=0.0, help="seconds from now until it starts")
    p.add_argument("--minutes", type=float, default=60.0, help="how long it runs")
    p.add_argument("--no-earmark", action="store_true", help="do not hold the stores' quotas at the start")
    p.add_argument("--max-km", type=float, default=0.0, help="nearest store within this distance (0 = any)")
    p.add_argument("--title", default="")
    p.add_argument("--customer", help="claim: the member")
    p.add_argument("--qty", type=int, default=1)
    p.add_argument("--at", metavar="STORE", help="claim: pickup store")
    p.add_argument("--near", type=_point, metavar="LAT,LON", help="claim: the nearest participating store")
    p.add_argument("--request-id", help="idempotency key (a retry returns the first answer)")
    _calling(p)
    p.set_defaults(run=_sale)

    p = subparsers.add_parser("token", help="bearer tokens of a server's token file: new, list, revoke",
                              description="Edit the token file of pyomni serve --tokens. new prints a fresh "
                                          "token once (the file keeps only its SHA-256); a running server "
                                          "picks the change up within a second.")
    p.add_argument("action", choices=("new", "list", "revoke"))
    p.add_argument("--file", required=True, help="the token file")
    p.add_argument("--principal", help="who the token stands for (new, revoke)")
    p.add_argument("--role", default="reader", help="admin, order-system, store, channel or reader (new)")
    p.add_argument("--store", action="append", default=[], help="a store the principal acts for (role store)")
    p.add_argument("--channel", action="append", default=[], help="a channel it reads (role channel)")
    p.set_defaults(run=_token)

    p = subparsers.add_parser("nearby", help="store locator: locations near a point with a SKU available")
    p.add_argument("sku")
    p.add_argument("--near", type=_point, required=True, metavar="LAT,LON")
    p.add_argument("--radius", type=float, default=30.0)
    p.add_argument("--limit", type=int, default=20)
    _calling(p)
    p.set_defaults(run=_nearby)


def _token(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from grpc_server.security import ROLES, TokenTable, hash_token, new_token, tokens_document

    path = Path(args.file)
    entries: list[dict[str, Any]] = []
    if path.exists():
        TokenTable(path)                                # refuse to edit a file the server would not load
        entries = json.loads(path.read_text(encoding="utf-8"))["tokens"]
    elif args.action != "new":
        raise errors.NotFound(f"no token file {str(path)!r}", field="file")
    if args.action == "list":
        _print([{k: v for k, v in e.items() if k != "sha256"} for e in entries])
        return 0
    if not args.principal:
        raise errors.InvalidArgument(f"token {args.action} needs --principal", field="principal")
    if args.action == "revoke":
        kept = [e for e in entries if e.get("principal") != args.principal]
        if len(kept) == len(entries):
            raise errors.NotFound(f"no token of principal {args.principal!r} in {str(path)!r}", field="principal")
        entries, answer = kept, {"revoked": args.principal, "tokens": len(entries) - len(kept)}
    else:
        if args.role not in ROLES:
            raise errors.InvalidArgument(f"--role must be one of {', '.join(ROLES)}", field="role")
        token = new_token()
        entry: dict[str, Any] = {"principal": args.principal, "role": args.role, "sha256": hash_token(token)}
        if args.store:
            entry["stores"] = sorted(set(args.store))
        if args.channel:
            entry["channels"] = sorted(set(args.channel))
        entries.append(entry)
        answer = {"principal": args.principal, "role": args.role, "token": token}
    text = tokens_document(entries)
    TokenTable(text=text)                               # what is written must load
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)                               # a running server sees the whole file or the old one
    _print(answer)
    return 0


def run_guarded(args: argparse.Namespace) -> int:
    """Run a command; a pyomni error becomes a one-line message on stderr and exit status 1."""
    try:
        return int(args.run(args))
    except errors.PyomniError as exc:
        print(json.dumps({"error": exc.reason, "field": exc.field, "message": str(exc)}), file=sys.stderr)
        return 1

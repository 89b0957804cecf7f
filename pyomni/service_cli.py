"""``pyomni serve`` and the small commands that call a running server.

``serve`` runs :func:`grpc_server.serve` and ``token`` edits its token file;
``route``, ``quote``, ``confirm``, ``release``, ``reservation``, ``stock``,
``nearby``, ``sale``, ``store`` and ``settle`` call it through
:class:`pyomni.Client` and print JSON (one object per answer), so a person can
try the service from a shell and a script can parse what it prints. A failed
call prints the error's reason, field and message to stderr and exits 1.

``store watch`` is a store terminal's order feed: one line per event (sequence
number, store, kind, shipment, lines, seconds left), or with ``--json`` one JSON
object per line, each flushed as it comes; Ctrl-C ends it (exit status 0), and
``--after`` the last sequence number it printed resumes it without a gap.
``store accept|pick|pack|ship|ready|collect|reject`` move a shipment,
``store list|return|exceptions|resolve`` do the rest, and ``settle`` writes the
settlement ledger as Parquet.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import json
import sys
from typing import Any

from . import errors
from .fulfilment import RejectReason

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


def _line(text: str) -> Any:
    """``SKU``, ``SKU:QTY`` or ``SKU:QTY:PRICE_CENTS`` as a :class:`~pyomni.model.Line` (the trailing numbers
    are read as quantity, then price).

    >>> [(x.sku, x.qty, x.unit_price_cents) for x in map(_line, ["SKU-1", "SKU-1:2", "SKU-1:2:1999"])]
    [('SKU-1', 1, 0), ('SKU-1', 2, 0), ('SKU-1', 2, 1999)]
    """
    from .model import Line

    parts = text.split(":")
    numbers: list[int] = []
    while len(parts) > 1 and len(numbers) < 2 and parts[-1].lstrip("-").isdigit():
        numbers.insert(0, int(parts.pop()))
    sku = ":".join(parts)
    if not sku or (len(text.split(":")) > 1 and not numbers):
        raise argparse.ArgumentTypeError(f"expected SKU[:QTY[:PRICE_CENTS]], got {text!r}")
    qty = numbers[0] if numbers else 1
    price = numbers[1] if len(numbers) > 1 else 0
    return Line(sku, qty, price)


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
                          tls_client_ca=args.tls_client_ca or "", tokens=args.tokens or "", insecure=args.insecure,
                          store_limits=not args.no_store_limits)
    return serve(config)


def _order(args: argparse.Namespace) -> Any:
    from .model import Order

    if args.to is None and args.pickup is None:
        raise errors.InvalidOrder("give --to LAT,LON (delivery) or --pickup LOCATION", field="destination")
    return Order(args.order_id, tuple(args.line), destination=args.to, pickup_location=args.pickup,
                 channel=args.channel, max_splits=args.max_splits, coupon_cents=args.coupon)


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


def _feed_line(batch: Any, event: Any, as_json: bool) -> str:
    """One line of ``store watch`` for an event of a feed batch."""
    s = event.shipment
    left = batch.seconds_left(event)
    if as_json:
        return json.dumps({"seq": event.seq, "location": event.location, "kind": event.kind, "shipment_id": s.id,
                           "order_id": s.order_id, "state": s.state.name,
                           "lines": [{"sku": x.sku, "qty": x.qty} for x in s.lines],
                           "seconds_left": None if left is None else round(left, 3), "due_at": s.due_at,
                           "late": s.late, "pickup": s.pickup, "reset": batch.reset}, ensure_ascii=False)
    lines = ",".join(f"{x.sku}:{x.qty}" for x in s.lines)
    shown = "-" if left is None else f"{left:.0f}s"
    return f"{event.seq} {event.location} {event.kind} {s.id} {lines} {shown}{' LATE' if s.late else ''}"


def _store_watch(args: argparse.Namespace) -> int:
    try:
        with _client(args) as client, client.watch_store_orders(args.location, after_seq=args.after,
                                                                  heartbeat=args.heartbeat) as feed:
            for batch in feed:
                for event in batch.events:
                    print(_feed_line(batch, event, args.json), flush=True)
    except KeyboardInterrupt:           # Ctrl-C: the store closed its terminal, nothing went wrong
        return 0
    return 0


_STEPS = {"accept": "accept_shipment", "pick": "pick_shipment", "pack": "pack_shipment", "ship": "ship_shipment",
          "ready": "ready_shipment", "collect": "collect_shipment"}
#: the reasons a store may give (TIMEOUT and ORDER_SYSTEM are the clock's and the order system's)
_STORE_REASONS = tuple(r.name.lower() for r in RejectReason
                       if r not in (RejectReason.TIMEOUT, RejectReason.ORDER_SYSTEM))


def _store(args: argparse.Namespace) -> int:
    action = args.store_command
    with _client(args) as client:
        if action in _STEPS:
            _print(getattr(client, _STEPS[action])(args.shipment_id, request_id=args.request_id))
        elif action == "reject":
            _print(client.reject_shipment(args.shipment_id, args.reason, note=args.note, request_id=args.request_id))
        elif action == "list":
            _print(client.list_shipments(args.location, include_closed=args.all))
        elif action == "return":
            _print(client.return_line(args.shipment_id, args.sku, args.qty, location=args.at,
                                      request_id=args.request_id))
        elif action == "exceptions":
            _print(client.order_exceptions(include_resolved=args.all))
        else:
            _print(client.resolve_exception(args.exception_id, retry=args.retry, note=args.note,
                                            request_id=args.request_id))
    return 0


def _settle(args: argparse.Namespace) -> int:
    from .settlement import write_settlement

    with _client(args) as client:
        table = client.export_settlement(args.day, entries=args.entries)
    out = write_settlement(table, args.out)
    _print({"out": str(out), "rows": table.num_rows, "day": args.day, "entries": args.entries})
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
    parser.add_argument("--line", "-l", type=_line, action="append", required=True,
                        metavar="SKU[:QTY[:PRICE_CENTS]]",
                        help="an order line, with its unit price in cents for settlement (repeat for more)")
    parser.add_argument("--coupon", type=int, default=0, metavar="CENTS",
                        help="e-coupon discount on the whole order, in cents")
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
    p.add_argument("--workers", type=int, default=512,
                   help="handler threads (default 512: each open store order feed holds one; waiting callers "
                        "cost no CPU; concurrent claims are batched)")
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
    p.add_argument("--no-store-limits", action="store_true",
                   help="a new data directory gets no default store time limits (15-minute answer limit, "
                        "10:00-22:00 China time); an existing one keeps what it has either way")
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

    _add_store_commands(subparsers)

    p = subparsers.add_parser("settle", help="write the settlement ledger of a running server as Parquet",
                              description="Export the settlement ledger (ExportSettlement): per business day and "
                                          "party, or every entry with --entries; written atomically.")
    p.add_argument("--day", help="one business day, ISO date (default: every day)")
    p.add_argument("--out", required=True, metavar="FILE.parquet", help="the Parquet file to write")
    p.add_argument("--entries", action="store_true", help="every settlement entry instead of the daily totals")
    _calling(p)
    p.set_defaults(run=_settle)

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


def _add_store_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("store", help="store operations: the order feed, shipment steps, returns, exceptions",
                              description="A store's side of a running server: watch its order feed, move "
                                          "shipments (accept, pick, pack, ship; ready, collect for pickup), reject "
                                          "them, list them, take returns, and resolve order exceptions.")
    sub = p.add_subparsers(dest="store_command", required=True, metavar="ACTION")
    q = sub.add_parser("watch", help="follow stores' order feeds, one line per event (Ctrl-C ends)")
    q.add_argument("location", nargs="+", help="the stores to watch")
    q.add_argument("--after", type=int, default=0, metavar="SEQ",
                   help="resume after this sequence number (default 0: start with every open shipment)")
    q.add_argument("--heartbeat", type=float, default=5.0, metavar="S", help="seconds between heartbeats")
    q.add_argument("--json", action="store_true", help="one JSON object per line")
    _calling(q)
    q.set_defaults(run=_store_watch)
    for name, text in (("accept", "take a new shipment on"), ("pick", "the units are off the shelf"),
                       ("pack", "the parcel is packed"), ("ship", "handed to the courier (needs the order paid)"),
                       ("ready", "ready for the customer to collect"),
                       ("collect", "the customer collected it (needs the order paid)")):
        q = sub.add_parser(name, help=text)
        q.add_argument("shipment_id")
        q.add_argument("--request-id", help="idempotency key (default: a new UUID)")
        _calling(q)
        q.set_defaults(run=_store)
    q = sub.add_parser("reject", help="give a shipment back; its lines are routed again")
    q.add_argument("shipment_id")
    q.add_argument("--reason", required=True, choices=_STORE_REASONS)
    q.add_argument("--note", default="", help="free text")
    q.add_argument("--request-id", help="idempotency key (default: a new UUID)")
    _calling(q)
    q.set_defaults(run=_store)
    q = sub.add_parser("list", help="a store's shipments (open ones unless --all)")
    q.add_argument("location")
    q.add_argument("--all", action="store_true", help="closed ones too")
    _calling(q)
    q.set_defaults(run=_store)
    q = sub.add_parser("return", help="units of a shipped or collected line handed back at a store")
    q.add_argument("shipment_id")
    q.add_argument("sku")
    q.add_argument("qty", type=int)
    q.add_argument("--at", required=True, metavar="LOCATION", help="the store taking them back")
    q.add_argument("--request-id", help="idempotency key (default: a new UUID)")
    _calling(q)
    q.set_defaults(run=_store)
    q = sub.add_parser("exceptions", help="order exceptions waiting for a person (--all: resolved ones too)")
    q.add_argument("--all", action="store_true")
    _calling(q)
    q.set_defaults(run=_store)
    q = sub.add_parser("resolve", help="close an order exception, or route its lines again (--retry)")
    q.add_argument("exception_id")
    q.add_argument("--retry", action="store_true", help="route the lines again")
    q.add_argument("--note", default="", help="how it was dealt with")
    q.add_argument("--request-id", help="idempotency key (default: a new UUID)")
    _calling(q)
    q.set_defaults(run=_store)


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

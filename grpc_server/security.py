"""Who may call what: TLS for the transport, bearer tokens and roles for the caller.

**Transport.** :func:`server_credentials` serves TLS from a certificate and key
file, and mutual TLS when a client CA file is given (a client without a
certificate that CA signed fails the handshake). The files are read again
whenever they change, without a restart: grpcio asks
:meth:`CertificateFiles.fetch` before each new handshake and the method
answers from the files' ``stat`` (a few µs), so a renewed certificate is
served from the next connection on; a half-written or mismatched pair is
refused (and logged) and the previous pair stays in service. Plain text is
for loopback and Unix sockets (:func:`is_local`); ``pyomni serve`` refuses
anything else unless told ``--insecure``.

**Callers.** A token file (JSON, :class:`TokenTable`) maps the SHA-256 of each
bearer token to a principal, a role and, for the ``store`` and ``channel``
roles, the stores or channels the principal acts for. Tokens are random
256-bit strings (:func:`new_token`), so an unsalted SHA-256 is what keeps them
safe at rest, as GitHub and PyPI store theirs; the file holds no secret. It is
re-read within a second of a change; a broken edit keeps the previous table
in force and is logged. ``PYOMNI_TOKENS`` may hold the same JSON instead of a
file (read once at start).

**Roles.** :data:`ROLE_METHODS` is the whole policy, one table:

* ``admin`` -- everything;
* ``order-system`` -- route, quote, confirm, release, reroute, flash-sale claims, returns, order
  exceptions, the settlement export, and every query;
* ``store`` -- its own stores only: their stock (read and apply events), rerouting an order away
  from one of them (the store's rejection), the reservations that ship from them, their order feeds,
  the steps and rejections of their shipments (an unknown shipment is refused like another store's,
  so the check tells nothing about what exists), their shipment lists, and returns taken there;
* ``channel`` -- its own channels' available-to-sell: the channel feed and the channel total;
* ``reader`` -- queries (the settlement export is not one: it is the order system's).

Store time limits and attribution rules (``SetStoreRules``, ``RegisterAttributionRule``,
``SetChannelAttribution``) are admin's only.

:class:`AuthInterceptor` checks every call once, from the call's own metadata
(the ``authorization: Bearer ...`` header, which with TLS is as private as the
connection): a missing or unknown token is ``UNAUTHENTICATED``, a call outside
the role (or a store or channel outside the principal's) ``PERMISSION_DENIED``
with an ``ErrorInfo``; neither reaches a servicer, so neither changes anything,
and both are counted in ``pyomni_rpc_denied``. Identity never comes from a
request field: a store's ``location`` in a request is checked *against* the
principal, never taken as who is calling. Health checks need no token (load
balancers probe them); reflection needs any valid one.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import logging
import os
import secrets
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from pyomni import Engine, errors
from pyomni.client import is_local
from pyomni.io import read_stock_events
from pyomni.wire import events_from_pb

from .handlers import rewrap
from .status import abort_with

__all__ = [
    "ROLES",
    "ROLE_METHODS",
    "Principal",
    "TokenTable",
    "AuthInterceptor",
    "CertificateFiles",
    "server_credentials",
    "is_local",
    "new_token",
    "hash_token",
    "current_principal",
]

log = logging.getLogger("pyomni.server")

ROLES = ("admin", "order-system", "store", "channel", "reader")

_QUERIES = frozenset({
    "InventoryService/GetStock", "InventoryService/GetAvailability", "InventoryService/FindNearbyStock",
    "InventoryService/FindPickupLocations",
    "RoutingService/QuoteOrder", "RoutingService/GetReservation", "RoutingService/ListReservations",
    "FlashSaleService/GetFlashSale", "FlashSaleService/ListFlashSales", "FlashSaleService/GetClaim",
    "FlashSaleService/WatchFlashSale",
    "ChannelFeedService/ExportAvailability", "ChannelFeedService/WatchAvailability",
    "StoreService/WatchStoreOrders", "StoreService/GetShipment", "StoreService/ListShipments",
    "StoreService/ListOrderExceptions", "StoreService/GetStoreRules",
    "DiagnosticsService/Echo",
})
_ORDERS = frozenset({
    "RoutingService/RouteOrder", "RoutingService/RouteOrders", "RoutingService/RouteOrderStream",
    "RoutingService/RouteOrderColumns", "RoutingService/RouteOrderColumnsStream",
    "RoutingService/ConfirmReservation", "RoutingService/ReleaseReservation", "RoutingService/RerouteReservation",
    "FlashSaleService/ClaimUnits", "FlashSaleService/ClaimUnitsBatch", "FlashSaleService/ClaimUnitsStream",
    "FlashSaleService/ConfirmClaim", "FlashSaleService/ReleaseClaim",
    "StoreService/ReturnLine", "StoreService/ResolveOrderException", "StoreService/ExportSettlement",
})
#: A store's shipment steps: each only on a shipment of one of its stores.
_SHIPMENT_STEPS = frozenset({
    "StoreService/AcceptShipment", "StoreService/MarkPicked", "StoreService/MarkPacked",
    "StoreService/MarkShipped", "StoreService/MarkReady", "StoreService/MarkCollected",
    "StoreService/RejectShipment", "StoreService/GetShipment",
})

#: Methods (``Service/Method`` of package ``pyomni.v1``) each role may call; ``admin`` may call all.
#: The ``store`` and ``channel`` entries are further held to the principal's stores or channels.
ROLE_METHODS: dict[str, frozenset[str]] = {
    "order-system": _QUERIES | _ORDERS,
    "reader": _QUERIES,
    "store": frozenset({"InventoryService/GetStock", "InventoryService/ApplyStockEvents",
                        "RoutingService/RerouteReservation", "RoutingService/GetReservation",
                        "StoreService/WatchStoreOrders", "StoreService/ListShipments", "StoreService/ReturnLine",
                        "DiagnosticsService/Echo"}) | _SHIPMENT_STEPS,
    "channel": frozenset({"InventoryService/GetAvailability", "ChannelFeedService/ExportAvailability",
                          "ChannelFeedService/WatchAvailability", "DiagnosticsService/Echo"}),
}

_PACKAGE = "/pyomni.v1."
_OPEN = ("/grpc.health.v1.Health/",)                           # no token needed
_ANY_CALLER = ("/grpc.reflection.v1alpha.ServerReflection/",    # any valid token
               "/grpc.reflection.v1.ServerReflection/")


@dataclass(frozen=True)
class Principal:
    """Who a token stands for.

    Attributes
    ----------
    name : str
        The principal, as the token file names it (logs and metrics use it).
    role : str
        One of :data:`ROLES`.
    stores : frozenset of str
        The locations a ``store`` principal acts for.
    channels : frozenset of str
        The channels a ``channel`` principal reads.
    """

    name: str
    role: str
    stores: frozenset[str] = field(default_factory=frozenset)
    channels: frozenset[str] = field(default_factory=frozenset)


#: The principal of the call being handled (set by :class:`AuthInterceptor` around the servicer).
current_principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("pyomni_principal",
                                                                                   default=None)


def new_token() -> str:
    """A fresh bearer token: 256 random bits, URL-safe (``pyo_`` + 43 characters)."""
    return "pyo_" + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """How a token is stored: ``sha256:`` and the hex digest of its UTF-8 bytes."""
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


def _principal(entry: Any, i: int) -> tuple[str, Principal]:
    where = f"tokens[{i}]"
    if not isinstance(entry, Mapping):
        raise errors.InvalidArgument(f"{where} is not an object", field=where)
    digest, name, role = entry.get("sha256"), entry.get("principal"), entry.get("role")
    if not isinstance(digest, str) or not digest.startswith("sha256:") or len(digest) != 71:
        raise errors.InvalidArgument(f"{where}.sha256 must be 'sha256:' and 64 hex digits (see "
                                     "`pyomni token new`)", field=f"{where}.sha256")
    if not isinstance(name, str) or not name:
        raise errors.InvalidArgument(f"{where}.principal must be a non-empty string", field=f"{where}.principal")
    if role not in ROLES:
        raise errors.InvalidArgument(f"{where}.role must be one of {', '.join(ROLES)}", field=f"{where}.role")
    scopes = {}
    for key in ("stores", "channels"):
        values = entry.get(key, [])
        if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
            raise errors.InvalidArgument(f"{where}.{key} must be a list of names", field=f"{where}.{key}")
        scopes[key] = frozenset(values)
    if role == "store" and not scopes["stores"]:
        raise errors.InvalidArgument(f"{where}: a store principal needs its stores", field=f"{where}.stores")
    if role == "channel" and not scopes["channels"]:
        raise errors.InvalidArgument(f"{where}: a channel principal needs its channels", field=f"{where}.channels")
    return digest.lower(), Principal(name, role, scopes["stores"], scopes["channels"])


def _parse_tokens(text: str, source: str) -> dict[str, Principal]:
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise errors.InvalidArgument(f"{source} is not JSON: {exc}", field="tokens") from None
    entries = doc.get("tokens") if isinstance(doc, Mapping) else None
    if not isinstance(entries, list):
        raise errors.InvalidArgument(f'{source} must be an object {{"tokens": [...]}}', field="tokens")
    table: dict[str, Principal] = {}
    for i, entry in enumerate(entries):
        digest, principal = _principal(entry, i)
        if digest in table:
            raise errors.InvalidArgument(f"{source}: tokens[{i}] repeats a token", field=f"tokens[{i}].sha256")
        table[digest] = principal
    return table


class TokenTable:
    """Bearer token (by its SHA-256) -> :class:`Principal`, re-read when its file changes.

    Parameters
    ----------
    path : path, optional
        The token file. ``None`` with ``text`` for a fixed table (``PYOMNI_TOKENS``).
    text : str, optional
        The JSON itself, when there is no file.
    check_every_s : float
        How often a lookup may ``stat`` the file for changes.

    Raises
    ------
    pyomni.errors.InvalidArgument
        The file is missing, unreadable or malformed at start (a later broken edit is logged
        and the previous table stays in force).

    Examples
    --------
    >>> t = TokenTable(text=json.dumps({"tokens": [
    ...     {"sha256": hash_token("s3cret"), "principal": "oms", "role": "order-system"}]}))
    >>> t.lookup("s3cret").role, t.lookup("guess")
    ('order-system', None)
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, *, text: str | None = None,
                 check_every_s: float = 1.0) -> None:
        if (path is None) == (text is None):
            raise errors.InvalidArgument("give a token file or its text, not both", field="tokens")
        self.path = Path(path) if path is not None else None
        self.check_every_s = check_every_s
        self.reloads = 0
        self._lock = threading.Lock()
        self._next_check = time.monotonic() + check_every_s
        if self.path is None:
            assert text is not None
            self._signature: tuple[int, ...] | None = None
            self._table = _parse_tokens(text, "PYOMNI_TOKENS")
        else:
            self._signature, self._table = self._read()

    @classmethod
    def from_environment(cls, path: str | os.PathLike[str] | None) -> TokenTable | None:
        """The table of ``--tokens FILE``, else of ``PYOMNI_TOKENS``, else None (no authentication)."""
        if path:
            return cls(path)
        text = os.environ.get("PYOMNI_TOKENS")
        return cls(text=text) if text else None

    def _read(self) -> tuple[tuple[int, ...], dict[str, Principal]]:
        assert self.path is not None
        try:
            st = self.path.stat()
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise errors.InvalidArgument(f"cannot read token file {str(self.path)!r}: {exc}",
                                         field="tokens") from None
        return (st.st_mtime_ns, st.st_size, st.st_ino), _parse_tokens(text, str(self.path))

    def _maybe_reload(self) -> None:
        if not self._lock.acquire(blocking=False):
            return                          # another thread is checking: use the table in force
        try:
            self._next_check = time.monotonic() + self.check_every_s
            assert self.path is not None
            try:
                st = self.path.stat()
            except OSError:
                log.error("token file vanished; keeping the tokens in force", extra={"path": str(self.path)})
                return
            if (st.st_mtime_ns, st.st_size, st.st_ino) == self._signature:
                return
            try:
                self._signature, self._table = self._read()
            except errors.InvalidArgument as exc:
                log.error("token file not reloaded; keeping the tokens in force", extra={"error": str(exc)})
                return
            self.reloads += 1
            log.info("token file reloaded", extra={"path": str(self.path), "tokens": len(self._table)})
        finally:
            self._lock.release()

    def lookup(self, token: str) -> Principal | None:
        """The principal of ``token``, or None if no such token is in force."""
        if self.path is not None and time.monotonic() >= self._next_check:
            self._maybe_reload()
        return self._table.get("sha256:" + hashlib.sha256(token.encode()).hexdigest())

    def __len__(self) -> int:
        return len(self._table)


# -- scopes of the store and channel roles -------------------------------------------------------
def _deny(what: str, field: str) -> errors.PermissionDenied:
    return errors.PermissionDenied(what, field=field)


def _store_scope(method: str, request: Any, who: Principal, engine: Engine) -> None:
    stores = who.stores
    if method == "InventoryService/GetStock":
        if request.location not in stores:
            raise _deny(f"{who.name} may read only its own stores' stock", "location")
    elif method == "InventoryService/ApplyStockEvents":
        try:
            # the locations as the engine will read them (an Arrow column is cast to strings first)
            locations = set(read_stock_events(events_from_pb(request)).column("location").to_pylist())
        except (errors.PyomniError, KeyError):
            return                          # malformed: the servicer refuses it with the precise error
        if not locations <= stores:
            raise _deny(f"{who.name} may apply stock events only at its own stores", "events.location")
    elif method == "RoutingService/RerouteReservation":
        if request.rejected_by not in stores:
            raise _deny(f"{who.name} may reject orders only for its own stores", "rejected_by")
    elif method == "RoutingService/GetReservation":
        try:
            shipments = engine.reservation(request.reservation_id).shipments
        except errors.PyomniError:
            shipments = ()
        if not any(s.location in stores for s in shipments):
            raise _deny(f"{who.name} may read only reservations that ship from its stores", "reservation_id")
    elif method in _SHIPMENT_STEPS:
        try:
            location = engine.shipment(request.shipment_id).location
        except errors.PyomniError:
            location = None             # unknown (or no id at all): refused like another store's, no oracle
        if location not in stores:
            raise _deny(f"{who.name} may act only on its own stores' shipments", "shipment_id")
    elif method == "StoreService/WatchStoreOrders":
        if not set(request.locations) <= stores:
            raise _deny(f"{who.name} may watch only its own stores' orders", "locations")
    elif method == "StoreService/ListShipments":
        if request.location not in stores:     # "" is every store's
            raise _deny(f"{who.name} may list only its own stores' shipments", "location")
    elif method == "StoreService/ReturnLine":
        if request.location not in stores:
            raise _deny(f"{who.name} may take returns only at its own stores", "location")


def _channel_scope(method: str, request: Any, who: Principal, engine: Engine) -> None:
    if method == "DiagnosticsService/Echo":
        return
    if request.channel not in who.channels:
        raise _deny(f"{who.name} may read only its own channels' availability", "channel")
    if method == "InventoryService/GetAvailability" and request.per_location:
        raise _deny(f"{who.name} may read the channel's total, not each store's stock", "per_location")


_SCOPES: dict[str, Callable[[str, Any, Principal, Engine], None]] = {
    "store": _store_scope, "channel": _channel_scope}


class AuthInterceptor(grpc.ServerInterceptor):
    """Checks each call's bearer token and role before its handler runs (see the module doc).

    Wraps each method's handler once (as :class:`~grpc_server.metrics.MetricsInterceptor` does, whose
    per-method cache it keeps valid); the check itself runs per call: one metadata scan, one SHA-256
    and two dict lookups, then the store or channel scope for those roles.

    Parameters
    ----------
    tokens : TokenTable
    engine : pyomni.Engine
        Consulted for the scope of a store's reservation reads.
    denied : callable, optional
        ``denied(method, reason)`` is called for every refused call (the server counts them).
    """

    def __init__(self, tokens: TokenTable, engine: Engine, *,
                 denied: Callable[[str, str], None] | None = None) -> None:
        self._tokens = tokens
        self._engine = engine
        self._denied = denied or (lambda method, reason: None)
        self._wrapped: dict[str, Any] = {}

    def intercept_service(self, continuation: Callable[[Any], Any], details: grpc.HandlerCallDetails) -> Any:
        method = details.method
        wrapped = self._wrapped.get(method)
        if wrapped is None:
            handler = continuation(details)
            if handler is None or method.startswith(_OPEN):
                return handler
            wrapped = self._wrapped[method] = self._wrap(method, handler)
        return wrapped

    def _authorize(self, method: str, short: str | None, request: Any, context: grpc.ServicerContext) -> Principal:
        token = None
        for key, value in context.invocation_metadata():
            if key == "authorization":
                if isinstance(value, str) and value[:7].lower() == "bearer ":
                    token = value[7:].strip()
                break
        if not token:
            self._refuse(context, method, errors.Unauthenticated(
                "this server needs a bearer token: send 'authorization: Bearer <token>'", field="authorization"))
        who = self._tokens.lookup(token)  # type: ignore[arg-type]
        if who is None:
            self._refuse(context, method, errors.Unauthenticated("unknown or revoked token", field="authorization"))
        assert who is not None
        if who.role == "admin" or short is None:
            return who
        if short not in ROLE_METHODS[who.role]:
            self._refuse(context, method, errors.PermissionDenied(
                f"role {who.role!r} ({who.name}) may not call {short}", field=""))
        scope = _SCOPES.get(who.role)
        if scope is not None:
            try:
                scope(short, request, who, self._engine)
            except errors.PermissionDenied as exc:
                self._refuse(context, method, exc)
        return who

    def _refuse(self, context: grpc.ServicerContext, method: str, exc: errors.PyomniError) -> None:
        self._denied(method.rsplit("/", 1)[-1], exc.reason)
        abort_with(context, exc)

    def _wrap(self, method: str, handler: Any) -> Any:
        # ``short`` is None for a non-pyomni method any valid caller may use (reflection), and for
        # any other non-pyomni method only admin passes
        if method.startswith(_PACKAGE):
            short: str | None = method[len(_PACKAGE):]
        elif method.startswith(_ANY_CALLER):
            short = None
        else:
            short = "(" + method + ")"          # in no role's table
        authorize = self._authorize
        # a request stream carries no scope to check (None): no role held to a scope may call one
        scoped = not handler.request_streaming

        def unary(inner: Callable[[Any, grpc.ServicerContext], Any]) -> Callable[[Any, grpc.ServicerContext], Any]:
            def run(request: Any, context: grpc.ServicerContext) -> Any:
                token = current_principal.set(authorize(method, short, request if scoped else None, context))
                try:
                    return inner(request, context)
                finally:
                    current_principal.reset(token)
            return run

        def streaming(inner: Callable[[Any, grpc.ServicerContext], Any]) -> Callable[[Any, grpc.ServicerContext], Any]:
            def run(request: Any, context: grpc.ServicerContext) -> Any:
                token = current_principal.set(authorize(method, short, request if scoped else None, context))
                try:
                    yield from inner(request, context)
                finally:
                    current_principal.reset(token)
            return run

        return rewrap(handler, unary, streaming)


# -- TLS -------------------------------------------------------------------------------------------
class CertificateFiles:
    """A server's certificate chain, key and (for mutual TLS) client CA, from PEM files, reloadable.

    Raises
    ------
    pyomni.errors.InvalidArgument
        A file is missing or unreadable, or the key does not belong to the certificate.
    """

    def __init__(self, cert: str | os.PathLike[str], key: str | os.PathLike[str],
                 client_ca: str | os.PathLike[str] | None = None) -> None:
        self.paths = tuple(Path(p) for p in (cert, key, client_ca) if p is not None)
        self.mutual = client_ca is not None
        self.reloads = 0
        self._lock = threading.Lock()
        self._signature, self._config = self._read()

    def _stat(self) -> tuple[int, ...]:
        return tuple(x for p in self.paths for x in (lambda s: (s.st_mtime_ns, s.st_size, s.st_ino))(p.stat()))

    def _read(self) -> tuple[tuple[int, ...], Any]:
        names = ("tls_cert", "tls_key", "tls_client_ca")
        for _ in range(5):
            # the files are stat'ed before and after they are read and checked: a renewal that lands
            # in between (a new certificate read with the old key) is read again, never served mixed
            try:
                signature = self._stat()
            except OSError:
                signature = ()                  # the read below names the missing file
            blobs = []
            for name, path in zip(names, self.paths):
                try:
                    blobs.append(path.read_bytes())
                except OSError as exc:
                    raise errors.InvalidArgument(f"cannot read {name} {str(path)!r}: {exc.strerror}",
                                                 field=name) from None
            try:
                # the stdlib's OpenSSL checks that the key matches the certificate (gRPC would only fail
                # the next handshake), and that a CA file holds certificates
                ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(self.paths[0], self.paths[1])
                if self.mutual:
                    ssl.create_default_context(cafile=str(self.paths[2]))
                if self._stat() == signature:
                    break
            except (ssl.SSLError, OSError) as exc:
                raise errors.InvalidArgument(f"TLS files {', '.join(map(str, self.paths))} do not make a valid "
                                             f"certificate, key and CA: {exc}", field="tls_cert") from None
        else:
            raise errors.InvalidArgument("TLS files keep changing while being read", field="tls_cert")
        config = grpc.ssl_server_certificate_configuration(
            [(blobs[1], blobs[0])], root_certificates=blobs[2] if self.mutual else None)
        return signature, config

    @property
    def initial(self) -> Any:
        """The configuration read at start."""
        return self._config

    def fetch(self) -> Any:
        """Called by grpcio before each handshake: a new configuration if the files changed, else None."""
        with self._lock:
            try:
                if self._stat() == self._signature:
                    return None
                self._signature, self._config = self._read()
            except (errors.InvalidArgument, OSError) as exc:
                log.error("TLS files not reloaded; serving the previous certificate", extra={"error": str(exc)})
                try:
                    self._signature = self._stat()      # do not retry a broken pair on every handshake
                except OSError:
                    pass                                # a file is gone for now: look again next time
                return None
            self.reloads += 1
            log.info("TLS certificate reloaded", extra={"paths": [str(p) for p in self.paths]})
            return self._config


def server_credentials(files: CertificateFiles) -> grpc.ServerCredentials:
    """TLS server credentials served from ``files``, reloaded when they change (mutual TLS with a client CA)."""
    return grpc.dynamic_ssl_server_credentials(files.initial, files.fetch,
                                               require_client_authentication=files.mutual)


def describe(tokens: TokenTable | None, files: CertificateFiles | None) -> dict[str, Any]:
    """What the server logs at start about its security."""
    return {"tls": "mutual" if files and files.mutual else "on" if files else "off",
            "auth": f"{len(tokens)} tokens" if tokens is not None else "off"}


def tokens_document(entries: Iterable[Mapping[str, Any]]) -> str:
    """A token file's text (``pyomni token`` writes it)."""
    return json.dumps({"tokens": list(entries)}, indent=2, ensure_ascii=False) + "\n"

"""Who may call what (grpc_server/security.py): TLS and mutual TLS, bearer tokens, roles and their scopes.

In-process servers on port 0 over small engines; the certificates come from ``tests/certs.py``.

* the role x RPC matrix enumerates every RPC of every ``pyomni.v1`` service from the generated
  descriptors, so a new RPC without a decision (a role's table in ``ROLE_METHODS``, or the test's
  ``ADMIN_ONLY``) fails here;
* store and channel principals are held to their own stores and channels, whatever a request says (a
  store's order feed, the steps of its shipments, its shipment list and the returns it takes);
* token files and certificates are reloaded on change, and a broken edit keeps the previous one;
* ``pyomni serve`` refuses plain text or no tokens on an exposed address before opening anything.
"""

from __future__ import annotations

import base64
import importlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import pyarrow as pa
import pytest
from certs import make_pki
from conftest import Snapshot
from google.protobuf import json_format, message_factory
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

import pyomni
import pyomni.v1
from grpc_server import SERVICE_NAMES, ServerConfig, create_server
from grpc_server.metrics import Metrics
from grpc_server.security import (
    ROLE_METHODS,
    ROLES,
    CertificateFiles,
    TokenTable,
    hash_token,
    is_local,
    new_token,
    tokens_document,
)
from grpc_server.server import _security
from pyomni import errors
from pyomni.cli import main
from pyomni.fulfilment import ShipmentState
from pyomni.wire import ERROR_DOMAIN

pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")

C = grpc.StatusCode
NETWORK = {"stores": 8, "warehouses": 1, "skus": 5, "seed": 1}


# -- every RPC, from the generated descriptors --------------------------------------------------
def _rpcs() -> dict[str, Any]:
    found = {}
    for path in sorted(Path(pyomni.v1.__file__).parent.glob("*_pb2.py")):
        module = importlib.import_module(f"pyomni.v1.{path.stem}")
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                found[f"{service.name}/{method.name}"] = method
    return found


RPCS = _rpcs()

#: The RPCs no role but admin may call: the network, bulk and streamed stock feeds, flash-sale set-up, store
#: time limits and attribution rules.
ADMIN_ONLY = frozenset({
    "InventoryService/UpsertLocations", "InventoryService/StreamStockEvents",
    "FlashSaleService/CreateFlashSale", "FlashSaleService/UpdateFlashSale", "FlashSaleService/EndFlashSale",
    "StoreService/SetStoreRules", "StoreService/RegisterAttributionRule", "StoreService/SetChannelAttribution",
})
# ApplyStockEvents is a store's (its own stores only), not an order system's or a reader's
assert "InventoryService/ApplyStockEvents" in ROLE_METHODS["store"]

#: A minimal request of every RPC, in the scope of the test's store and channel principals (``s``).
REQUESTS: dict[str, Any] = {
    "InventoryService/UpsertLocations": lambda s: {},
    "InventoryService/ApplyStockEvents": lambda s: {"events": [
        {"location": s.store, "sku": s.sku, "kind": "STOCK_EVENT_KIND_ADJUST", "qty": 0}]},
    "InventoryService/StreamStockEvents": lambda s: {"events": [
        {"location": s.store, "sku": s.sku, "kind": "STOCK_EVENT_KIND_ADJUST", "qty": 0}]},
    "InventoryService/GetStock": lambda s: {"location": s.store, "sku": s.sku},
    "InventoryService/GetAvailability": lambda s: {"sku": s.sku, "channel": s.channel},
    "InventoryService/FindNearbyStock": lambda s: {"sku": s.sku, "near": {"latitude": 31.2, "longitude": 121.4}},
    "InventoryService/FindPickupLocations": lambda s: {},
    "RoutingService/RouteOrder": lambda s: {},
    "RoutingService/QuoteOrder": lambda s: {},
    "RoutingService/RouteOrders": lambda s: {},
    "RoutingService/RouteOrderStream": lambda s: {},
    "RoutingService/RouteOrderColumns": lambda s: {},
    "RoutingService/RouteOrderColumnsStream": lambda s: {},
    "RoutingService/ConfirmReservation": lambda s: {"reservation_id": "R-NOPE"},
    "RoutingService/ReleaseReservation": lambda s: {"reservation_id": "R-NOPE"},
    "RoutingService/RerouteReservation": lambda s: {"reservation_id": "R-NOPE", "rejected_by": s.store},
    "RoutingService/GetReservation": lambda s: {"reservation_id": s.reservation},
    "RoutingService/ListReservations": lambda s: {},
    "FlashSaleService/CreateFlashSale": lambda s: {},
    "FlashSaleService/UpdateFlashSale": lambda s: {},
    "FlashSaleService/EndFlashSale": lambda s: {"sale_id": "nope"},
    "FlashSaleService/GetFlashSale": lambda s: {"sale_id": "nope"},
    "FlashSaleService/ListFlashSales": lambda s: {},
    "FlashSaleService/ClaimUnits": lambda s: {"sale_id": "nope"},
    "FlashSaleService/ClaimUnitsBatch": lambda s: {"sale_id": "nope"},
    "FlashSaleService/ClaimUnitsStream": lambda s: {"sale_id": "nope"},
    "FlashSaleService/ConfirmClaim": lambda s: {"claim_id": "nope"},
    "FlashSaleService/ReleaseClaim": lambda s: {"claim_id": "nope"},
    "FlashSaleService/GetClaim": lambda s: {"claim_id": "nope"},
    "FlashSaleService/WatchFlashSale": lambda s: {"sale_id": "nope"},
    "ChannelFeedService/ExportAvailability": lambda s: {"channel": s.channel},
    "ChannelFeedService/WatchAvailability": lambda s: {"channel": s.channel},
    "DiagnosticsService/Echo": lambda s: {},
    "StoreService/WatchStoreOrders": lambda s: {"locations": [s.store], "heartbeatSeconds": 1},
    "StoreService/AcceptShipment": lambda s: {"shipmentId": s.shipment},
    "StoreService/MarkPicked": lambda s: {"shipmentId": s.shipment},
    "StoreService/MarkPacked": lambda s: {"shipmentId": s.shipment},
    "StoreService/MarkShipped": lambda s: {"shipmentId": s.shipment},
    "StoreService/MarkReady": lambda s: {"shipmentId": s.shipment},
    "StoreService/MarkCollected": lambda s: {"shipmentId": s.shipment},
    "StoreService/RejectShipment": lambda s: {"shipmentId": s.shipment, "reason": "REJECT_REASON_OTHER"},
    "StoreService/GetShipment": lambda s: {"shipmentId": s.shipment},
    "StoreService/ListShipments": lambda s: {"location": s.store},
    "StoreService/ReturnLine": lambda s: {"shipmentId": s.shipment, "sku": s.sku, "qty": 1, "location": s.store},
    "StoreService/ListOrderExceptions": lambda s: {},
    "StoreService/ResolveOrderException": lambda s: {"exceptionId": "X-NOPE"},
    # no-ops: the store has no rules of its own to remove, the default rule is chosen again
    "StoreService/SetStoreRules": lambda s: {"location": s.store},
    "StoreService/GetStoreRules": lambda s: {},
    "StoreService/RegisterAttributionRule": lambda s: {"rule": {"name": "fulfiller", "fulfillingBp": 10000,
                                                                "couponHqBp": 10000}},
    "StoreService/SetChannelAttribution": lambda s: {"rule": "fulfiller@1"},
    "StoreService/ExportSettlement": lambda s: {},
}


def _allowed(role: str, rpc: str) -> bool:
    return role == "admin" or rpc in ROLE_METHODS[role]


def call(channel: grpc.Channel, rpc: str, request: Any, token: str | None = None, *,
         metadata: tuple[tuple[str, str], ...] = (), timeout: float = 5.0) -> Any:
    """Call ``rpc`` ("Service/Method") with ``request`` (a message or a dict): the answer, or the first
    message of a response stream (None if it ends at once); a request stream carries the one message."""
    method = RPCS[rpc]
    if isinstance(request, dict):
        request = json_format.ParseDict(request, message_factory.GetMessageClass(method.input_type)())
    path = f"/{method.containing_service.full_name}/{method.name}"
    out = message_factory.GetMessageClass(method.output_type)
    kw = {"request_serializer": lambda m: m.SerializeToString(), "response_deserializer": out.FromString}
    meta = ((("authorization", f"Bearer {token}"),) if token else ()) + metadata
    args = {"timeout": timeout, "metadata": meta}
    if method.client_streaming and method.server_streaming:
        responses = channel.stream_stream(path, **kw)(iter([request]), **args)
    elif method.client_streaming:
        return channel.stream_unary(path, **kw)(iter([request]), **args)
    elif method.server_streaming:
        responses = channel.unary_stream(path, **kw)(request, **args)
    else:
        return channel.unary_unary(path, **kw)(request, **args)
    try:
        return next(responses, None)
    finally:
        responses.cancel()


def _status(exc: grpc.RpcError) -> tuple[grpc.StatusCode, str | None, str | None]:
    """The code, ErrorInfo reason and field of a failed call."""
    st = rpc_status.from_call(exc)  # type: ignore[arg-type]
    for detail in st.details if st is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            assert info.domain == ERROR_DOMAIN
            return exc.code(), info.reason, info.metadata.get("field")  # type: ignore[attr-defined]
    return exc.code(), None, None  # type: ignore[attr-defined]


def _state(eng: pyomni.Engine) -> tuple[int, Snapshot]:
    return eng.lsn, Snapshot(eng)


def _token_entry(token: str, principal: str, role: str, **scope: list[str]) -> dict[str, Any]:
    return {"sha256": hash_token(token), "principal": principal, "role": role, **scope}


# -- a server with one principal of each role --------------------------------------------------
@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    """An engine, its server with tokens and metrics, and what the principals may act on."""
    net = pyomni.demo_network(**NETWORK)
    stores = [loc for i, loc in enumerate(net.ids) if net.kind[i] == pyomni.LocationKind.STORE.value]
    eng = pyomni.Engine(net, channels={"tmall": pyomni.ChannelRule(share=0.5), "jd": pyomni.ChannelRule(share=0.5)})
    store, other = stores[0], stores[1]
    sku = net.skus[1]
    held = {}
    for where in (store, other):
        eng.set_stock(where, sku, 10)
        loc = net.location(net.ids.index(where))
        a = eng.route_order(pyomni.Order(f"o-{where}", [(sku, 1)], destination=(loc.lat, loc.lon)))
        assert [s.location for s in a.shipments] == [where]
        held[where] = a.reservation_id
    # a shipment of each store for the store RPCs of the role matrix (which rejects the store's, as admin)
    matrix = {}
    for where in (store, other):
        eng.set_stock(where, net.skus[3], 5)
        loc = net.location(net.ids.index(where))
        eng.route_order(pyomni.Order(f"matrix-{where}", [(net.skus[3], 1)], destination=(loc.lat, loc.lon)))
        (matrix[where],) = eng.shipments(where, order_id=f"matrix-{where}")
    tokens = {role: new_token() for role in ROLES}
    scopes = {"store": {"stores": [store]}, "channel": {"channels": ["tmall"]}}
    path = tmp_path_factory.mktemp("tokens") / "tokens.json"
    path.write_text(tokens_document(_token_entry(tokens[role], f"{role}-1", role, **scopes.get(role, {}))
                                    for role in ROLES))
    metrics = Metrics(eng)
    server, port = create_server("127.0.0.1:0", eng, metrics=metrics, tokens=TokenTable(path))
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield SimpleNamespace(eng=eng, net=net, metrics=metrics, address=f"127.0.0.1:{port}", channel=channel,
                          tokens=tokens, store=store, other_store=other, sku=sku, channel_name="tmall",
                          other_channel="jd", reservation=held[store], other_reservation=held[other],
                          shipment=matrix[store].id, other_shipment=matrix[other].id)
    channel.close()
    server.stop(None)


def _scope(s: SimpleNamespace) -> SimpleNamespace:
    return SimpleNamespace(store=s.store, sku=s.sku, channel=s.channel_name, reservation=s.reservation,
                           shipment=s.shipment)


def _client(s: SimpleNamespace, role: str) -> pyomni.Client:
    return pyomni.Client(s.address, token=s.tokens[role], timeout=5)


# -- the role x RPC matrix ---------------------------------------------------------------------
def test_every_rpc_has_a_decision_and_the_table_names_only_real_rpcs():
    decided = set().union(*ROLE_METHODS.values())
    assert decided <= set(RPCS), f"ROLE_METHODS names no such RPC: {decided - set(RPCS)}"
    assert not decided & ADMIN_ONLY
    assert decided | ADMIN_ONLY == set(RPCS), f"RPCs without a decision: {set(RPCS) - decided - ADMIN_ONLY}"
    assert set(REQUESTS) == set(RPCS)
    assert set(ROLE_METHODS) == set(ROLES) - {"admin"}


@pytest.mark.parametrize("rpc", sorted(RPCS))
@pytest.mark.parametrize("role", ROLES)
def test_role_matrix(secured, role, rpc):
    request = REQUESTS[rpc](_scope(secured))
    before = _state(secured.eng)
    try:
        call(secured.channel, rpc, request, secured.tokens[role], timeout=3)
        outcome = (C.OK, None, None)
    except grpc.RpcError as exc:
        outcome = _status(exc)
    if _allowed(role, rpc):
        assert outcome[0] not in (C.UNAUTHENTICATED, C.PERMISSION_DENIED), outcome
    else:
        assert outcome[:2] == (C.PERMISSION_DENIED, "PERMISSION_DENIED")
        assert _state(secured.eng) == before


@pytest.mark.parametrize("rpc", sorted(RPCS))
def test_no_token_or_an_unknown_one_is_unauthenticated(secured, rpc):
    request = REQUESTS[rpc](_scope(secured))
    before = _state(secured.eng)
    for token, metadata in ((None, ()), ("pyo_guess", ()), (None, (("authorization", secured.tokens["admin"]),)),
                            (None, (("authorization", f"Basic {secured.tokens['admin']}"),))):
        with pytest.raises(grpc.RpcError) as caught:
            call(secured.channel, rpc, request, token, metadata=metadata, timeout=3)
        assert _status(caught.value)[:2] == (C.UNAUTHENTICATED, "UNAUTHENTICATED")
    assert _state(secured.eng) == before


def test_health_needs_no_token_and_reflection_needs_a_valid_one(secured):
    health = health_pb2_grpc.HealthStub(secured.channel)
    for name in ("", *SERVICE_NAMES):
        assert health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5).status == \
            health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(secured.channel)
    ask = [reflection_pb2.ServerReflectionRequest(list_services="")]
    for role in ("reader", "store"):
        answer = next(reflection.ServerReflectionInfo(
            iter(ask), metadata=(("authorization", f"Bearer {secured.tokens[role]}"),), timeout=5))
        assert set(SERVICE_NAMES) <= {s.name for s in answer.list_services_response.service}
    for metadata in ((), (("authorization", "Bearer pyo_guess"),)):
        with pytest.raises(grpc.RpcError) as caught:
            next(reflection.ServerReflectionInfo(iter(ask), metadata=metadata, timeout=5))
        assert caught.value.code() is C.UNAUTHENTICATED


# -- scopes of the store and channel principals ------------------------------------------------
def test_a_store_reads_its_own_stock_only(secured):
    with _client(secured, "store") as c:
        assert c.stock(secured.store, secured.sku).on_hand >= 9
        with pytest.raises(errors.PermissionDenied) as caught:
            c.stock(secured.other_store, secured.sku)
        assert caught.value.field == "location"
        with pytest.raises(errors.PermissionDenied):
            c.availability(secured.sku)          # the network-wide list is a query, not a store's


@pytest.mark.parametrize("form", ["messages", "arrow_ipc"])
def test_a_store_applies_stock_events_at_its_own_store_only(secured, form):
    eng, store, other, sku = secured.eng, secured.store, secured.other_store, secured.sku

    def events(*where: str) -> Any:
        rows = [{"location": w, "sku": sku, "event": "receive", "qty": 2} for w in where]
        return pa.Table.from_pylist(rows) if form == "arrow_ipc" else rows

    with _client(secured, "store") as c:
        on_hand = eng.stock(store, sku).on_hand
        assert c.apply_stock_events(events(store)) == 1
        assert eng.stock(store, sku).on_hand == on_hand + 2
        for refused in (events(other), events(store, other), events(other, store)):
            before = _state(eng)
            with pytest.raises(errors.PermissionDenied) as caught:
                c.apply_stock_events(refused)
            assert caught.value.field == "events.location"
            assert _state(eng) == before
    with _client(secured, "order-system") as c, pytest.raises(errors.PermissionDenied):
        c.apply_stock_events(events(store))


def test_a_stores_arrow_events_are_scoped_as_the_engine_reads_them(secured):
    eng, store, other, sku = secured.eng, secured.store, secured.other_store, secured.sku

    def request(location: pa.Array) -> Any:
        table = pa.table({"location": location, "sku": [sku], "event": ["receive"], "qty": [1]})
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        return {"arrowIpc": base64.b64encode(sink.getvalue().to_pybytes()).decode()}

    token = secured.tokens["store"]
    on_hand = eng.stock(store, sku).on_hand
    # the engine casts a binary column to strings: its own store in bytes is still its own store
    call(secured.channel, "InventoryService/ApplyStockEvents", request(pa.array([store.encode()])), token)
    assert eng.stock(store, sku).on_hand == on_hand + 1
    before = _state(eng)
    for location, expected in ((pa.array([other.encode()]), (C.PERMISSION_DENIED, "PERMISSION_DENIED")),
                               (pa.array([other], pa.large_string()), (C.PERMISSION_DENIED, "PERMISSION_DENIED")),
                               (pa.array([other]).dictionary_encode(), (C.PERMISSION_DENIED, "PERMISSION_DENIED")),
                               # not a column of ids at all: the servicer's own precise refusal, not a crash
                               (pa.array([[store]]), (C.INVALID_ARGUMENT, "INVALID_ARGUMENT")),
                               (pa.array([None], pa.string()), (C.INVALID_ARGUMENT, "INVALID_ARGUMENT"))):
        with pytest.raises(grpc.RpcError) as caught:
            call(secured.channel, "InventoryService/ApplyStockEvents", request(location), token)
        assert _status(caught.value)[:2] == expected, location.type
    assert _state(eng) == before


def test_a_store_rejects_only_its_own_shipments(secured):
    eng, net, sku = secured.eng, secured.net, secured.net.skus[2]
    store, other = secured.store, secured.other_store
    with _client(secured, "admin") as admin:
        admin.apply_stock_events([{"location": store, "sku": sku, "event": "set", "qty": 1}])
        loc = net.location(net.ids.index(store))
        mine = admin.route_order(pyomni.Order("reroute-1", [(sku, 1)], destination=(loc.lat, loc.lon)))
        admin.apply_stock_events([{"location": other, "sku": sku, "event": "set", "qty": 1}])
    assert [s.location for s in mine.shipments] == [store]
    with _client(secured, "store") as c:
        before = _state(eng)
        with pytest.raises(errors.PermissionDenied) as caught:      # naming another store as the rejecter
            c.reroute(mine.reservation_id, other)
        assert caught.value.field == "rejected_by"
        with pytest.raises(errors.PermissionDenied):                # another store's reservation, as itself
            c.reroute(secured.other_reservation, other)
        assert _state(eng) == before
        with pytest.raises(errors.InvalidArgument):                 # past the check: the engine's own rule
            c.reroute(secured.other_reservation, store)
        again = c.reroute(mine.reservation_id, store)               # its own rejection: re-routed elsewhere
    assert [s.location for s in again.shipments] == [other]
    assert (eng.stock(store, sku).reserved, eng.stock(other, sku).reserved) == (0, 1)


def test_a_store_reads_the_reservations_that_ship_from_it_only(secured):
    with _client(secured, "store") as c:
        assert c.reservation(secured.reservation).shipments[0].location == secured.store
        for refused in (secured.other_reservation, "R-NOPE"):      # no existence oracle either
            with pytest.raises(errors.PermissionDenied) as caught:
                c.reservation(refused)
            assert caught.value.field == "reservation_id"


def _store_shipments(secured: SimpleNamespace, sku: str) -> tuple[Any, Any]:
    """A fresh shipment at the store principal's store and one at the other store (routed by admin)."""
    eng, net = secured.eng, secured.net
    out = []
    for where in (secured.store, secured.other_store):
        eng.set_stock(where, sku, eng.stock(where, sku).on_hand + 1)
        loc = net.location(net.ids.index(where))
        order_id = f"scope-{sku}-{where}-{len(eng.shipments(open_only=False))}"
        eng.route_order(pyomni.Order(order_id, [(sku, 1)], destination=(loc.lat, loc.lon)))
        (ship,) = eng.shipments(where, order_id=order_id)
        out.append(ship)
    return out[0], out[1]


def test_a_store_moves_only_its_own_shipments_and_an_unknown_one_is_refused_alike(secured):
    eng = secured.eng
    mine, theirs = _store_shipments(secured, secured.net.skus[4])
    with _client(secured, "store") as c:
        assert c.accept_shipment(mine.id).state is ShipmentState.ACCEPTED
        assert c.shipment(mine.id).state is ShipmentState.ACCEPTED
        before = _state(eng)
        refusals = [lambda sid: c.accept_shipment(sid), lambda sid: c.pick_shipment(sid),
                    lambda sid: c.pack_shipment(sid), lambda sid: c.ship_shipment(sid),
                    lambda sid: c.ready_shipment(sid), lambda sid: c.collect_shipment(sid),
                    lambda sid: c.reject_shipment(sid, "no_staff"), lambda sid: c.shipment(sid)]
        for act in refusals:
            # another store's shipment and one that does not exist are refused the same way: no oracle
            for sid in (theirs.id, "R0000009999-1", "not an id\n"):
                with pytest.raises(errors.PermissionDenied) as caught:
                    act(sid)
                assert caught.value.field == "shipment_id"
        assert _state(eng) == before and eng.shipment(theirs.id) == theirs
        rejection = c.reject_shipment(mine.id, "not_found")                  # its own: past the check
    assert rejection.shipment.state is ShipmentState.REJECTED
    with _client(secured, "order-system") as c, pytest.raises(errors.PermissionDenied):
        c.accept_shipment(theirs.id)                                        # steps are the stores'


def test_a_store_watches_only_its_own_stores(secured):
    token = secured.tokens["store"]
    first = call(secured.channel, "StoreService/WatchStoreOrders", {"locations": [secured.store]}, token)
    assert first.reset
    for locations in ([secured.other_store], [secured.store, secured.other_store], ["XX-NOWHERE"]):
        with pytest.raises(grpc.RpcError) as caught:
            call(secured.channel, "StoreService/WatchStoreOrders", {"locations": locations}, token)
        assert _status(caught.value) == (C.PERMISSION_DENIED, "PERMISSION_DENIED", "locations")
    with _client(secured, "reader") as c, c.watch_store_orders([secured.other_store]) as feed:
        assert next(feed).reset                                             # a query: any store, for a reader


def test_a_store_lists_shipments_and_takes_returns_only_at_its_own_stores(secured):
    eng = secured.eng
    mine, theirs = _store_shipments(secured, secured.net.skus[4])
    with _client(secured, "store") as c:
        assert mine.id in {s.id for s in c.list_shipments(secured.store)}
        for where in (secured.other_store, None):                            # None: every store's
            with pytest.raises(errors.PermissionDenied) as caught:
                c.list_shipments(where)
            assert caught.value.field == "location"
        before = _state(eng)
        with pytest.raises(errors.PermissionDenied) as caught:
            c.return_line(mine.id, secured.net.skus[4], 1, location=secured.other_store)
        assert caught.value.field == "location" and _state(eng) == before
        with pytest.raises(errors.ReturnNotAllowed):                          # at its own store: the engine's rule
            c.return_line(theirs.id, secured.net.skus[4], 1, location=secured.store)
    with _client(secured, "order-system") as c:
        assert {mine.id, theirs.id} <= {s.id for s in c.list_shipments()}
        assert c.export_settlement().equals(eng.settlement())
        assert c.order_exceptions(include_resolved=True) == eng.order_exceptions(None)
    with _client(secured, "reader") as c, pytest.raises(errors.PermissionDenied):
        c.export_settlement()                                               # money is not a reader's


@pytest.mark.parametrize("rpc", ["InventoryService/GetAvailability", "ChannelFeedService/ExportAvailability",
                                 "ChannelFeedService/WatchAvailability"])
def test_a_channel_reads_its_own_channel_only(secured, rpc):
    request = REQUESTS[rpc](_scope(secured))
    token = secured.tokens["channel"]
    assert call(secured.channel, rpc, request, token) is not None
    for channel in (secured.other_channel, ""):             # "" is the whole, unbounded available-to-sell
        with pytest.raises(grpc.RpcError) as caught:
            call(secured.channel, rpc, {**request, "channel": channel}, token)
        assert _status(caught.value) == (C.PERMISSION_DENIED, "PERMISSION_DENIED", "channel")


def test_a_channel_reads_the_total_not_each_stores_stock(secured):
    with pytest.raises(grpc.RpcError) as caught:
        call(secured.channel, "InventoryService/GetAvailability",
             {"sku": secured.sku, "channel": secured.channel_name, "perLocation": True}, secured.tokens["channel"])
    assert _status(caught.value) == (C.PERMISSION_DENIED, "PERMISSION_DENIED", "per_location")
    with _client(secured, "channel") as c:
        assert c.available(secured.sku, channel=secured.channel_name) == secured.eng.available(
            secured.sku, channel=secured.channel_name)


# -- identity comes from the token, never from the request ---------------------------------------
def test_no_request_field_or_header_makes_a_caller_someone_else(secured):
    eng = secured.eng
    before = _state(eng)
    # every string field of each admin-only request says "admin", and the headers say so too
    for rpc in sorted(ADMIN_ONLY | {"InventoryService/ApplyStockEvents"}):
        request = message_factory.GetMessageClass(RPCS[rpc].input_type)()
        for field in request.DESCRIPTOR.fields:
            if field.type == field.TYPE_STRING and not field.is_repeated:
                setattr(request, field.name, "admin")
        headers = (("x-pyomni-role", "admin"), ("x-principal", "admin-1"), ("role", "admin"),
                   ("authorization", f"Bearer {secured.tokens['admin']}"))     # a second token is not read
        with pytest.raises(grpc.RpcError) as caught:
            call(secured.channel, rpc, request, secured.tokens["reader"], metadata=headers)
        assert _status(caught.value)[:2] == (C.PERMISSION_DENIED, "PERMISSION_DENIED")
    # a store naming another store (or the principal's own name) is checked against its token's stores
    with _client(secured, "store") as c:
        for where in (secured.other_store, "store-1", "admin"):
            with pytest.raises(errors.PermissionDenied):
                c.stock(where, secured.sku)
    assert _state(eng) == before


# -- metrics -----------------------------------------------------------------------------------
def test_denials_are_counted_by_method_and_reason(secured):
    registry = secured.metrics.registry

    def sample(name: str, **labels: str) -> float:
        return registry.get_sample_value(name, labels) or 0.0

    denied = sample("pyomni_rpc_denied_total", method="GetStock", reason="PERMISSION_DENIED")
    unauthenticated = sample("pyomni_rpc_denied_total", method="GetStock", reason="UNAUTHENTICATED")
    refused = sample("pyomni_rpc_requests_total", method="GetStock", code="PERMISSION_DENIED")
    anonymous = sample("pyomni_rpc_requests_total", method="GetStock", code="UNAUTHENTICATED")
    request = {"location": secured.other_store, "sku": secured.sku}
    for _ in range(3):
        with pytest.raises(grpc.RpcError):
            call(secured.channel, "InventoryService/GetStock", request, secured.tokens["store"])
    with pytest.raises(grpc.RpcError):
        call(secured.channel, "InventoryService/GetStock", request)
    assert sample("pyomni_rpc_denied_total", method="GetStock", reason="PERMISSION_DENIED") == denied + 3
    assert sample("pyomni_rpc_denied_total", method="GetStock", reason="UNAUTHENTICATED") == unauthenticated + 1
    assert sample("pyomni_rpc_requests_total", method="GetStock", code="PERMISSION_DENIED") == refused + 3
    assert sample("pyomni_rpc_requests_total", method="GetStock", code="UNAUTHENTICATED") == anonymous + 1


# -- the token file ----------------------------------------------------------------------------
def _token_cli(capsys, *argv: str) -> tuple[int, Any, str]:
    capsys.readouterr()
    status = main(["token", *argv])
    out, err = capsys.readouterr()
    return status, json.loads(out) if out.strip() else None, err


def _wait_until(check, seconds: float) -> float:
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < seconds, "not within the time allowed"
        time.sleep(0.05)
    return time.monotonic() - start


def test_the_token_file_is_reloaded_and_a_broken_edit_keeps_the_tokens_in_force(tmp_path, capsys, caplog):
    path = tmp_path / "tokens.json"
    status, made, _ = _token_cli(capsys, "new", "--file", str(path), "--principal", "a", "--role", "reader")
    assert status == 0
    token_a = made["token"]
    table = TokenTable(path)
    assert table.check_every_s == 1.0
    eng = pyomni.Engine(pyomni.demo_network(**NETWORK))
    server, port = create_server("127.0.0.1:0", eng, tokens=table)
    server.start()
    try:
        with pyomni.Client(f"127.0.0.1:{port}", token=token_a, timeout=5) as a:
            assert a.echo(b"a") == b"a"
            assert _token_cli(capsys, "revoke", "--file", str(path), "--principal", "a")[0] == 0
            status, made, _ = _token_cli(capsys, "new", "--file", str(path), "--principal", "b", "--role", "admin")
            assert status == 0
            with pyomni.Client(f"127.0.0.1:{port}", token=made["token"], timeout=5) as b:

                def swapped() -> bool:
                    try:
                        a.echo()
                    except errors.Unauthenticated:
                        return b.echo(b"b") == b"b"
                    return False

                assert _wait_until(swapped, 2.5) < 2.5
                reloads = table.reloads
                with caplog.at_level(logging.ERROR, logger="pyomni.server"):
                    path.write_text('{"tokens": [')                # an editor's half-saved file
                    time.sleep(table.check_every_s + 0.1)
                    assert b.echo(b"still") == b"still"
                    with pytest.raises(errors.Unauthenticated):
                        a.echo()
                assert table.reloads == reloads
                assert any("not reloaded" in r.getMessage() for r in caplog.records)
    finally:
        server.stop(None)


def test_tokens_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("PYOMNI_TOKENS", raising=False)
    assert TokenTable.from_environment(None) is None
    monkeypatch.setenv("PYOMNI_TOKENS", tokens_document([_token_entry("t-1", "oms", "order-system")]))
    table = TokenTable.from_environment(None)
    assert table is not None and table.lookup("t-1").role == "order-system" and table.lookup("t-2") is None
    path = tmp_path / "tokens.json"
    path.write_text(tokens_document([_token_entry("t-2", "ops", "admin")]))
    from_file = TokenTable.from_environment(path)                    # the file wins
    assert from_file is not None and from_file.lookup("t-2").role == "admin" and from_file.lookup("t-1") is None


@pytest.mark.parametrize(("case", "text", "field"), [
    ("missing file", None, "tokens"),
    ("not JSON", "{tokens: []}", "tokens"),
    ("not an object", '["tokens"]', "tokens"),
    ("bad hash", '{"tokens": [{"sha256": "abc", "principal": "x", "role": "admin"}]}', "tokens[0].sha256"),
    ("bad role", tokens_document([_token_entry("t", "x", "root")]), "tokens[0].role"),
    ("store without stores", tokens_document([_token_entry("t", "x", "store")]), "tokens[0].stores"),
    ("channel without channels", tokens_document([_token_entry("t", "x", "channel", channels=[])]),
     "tokens[0].channels"),
    ("stores not a list", tokens_document([_token_entry("t", "x", "store", stores="SH-1")]), "tokens[0].stores"),
    ("duplicate hash", tokens_document([_token_entry("t", "x", "admin"), _token_entry("t", "y", "reader")]),
     "tokens[1].sha256"),
])
def test_bad_token_files_are_refused(tmp_path, case, text, field):
    path = tmp_path / "tokens.json"
    if text is not None:
        path.write_text(text)
    with pytest.raises(errors.InvalidArgument) as caught:
        TokenTable(path)
    assert caught.value.field == field


def test_the_token_command(tmp_path, capsys):
    path = tmp_path / "tokens.json"
    status, made, _ = _token_cli(capsys, "new", "--file", str(path), "--principal", "sh-1", "--role", "store",
                                 "--store", "SH-0001", "--store", "SH-0002")
    assert status == 0 and made["token"].startswith("pyo_") and made["role"] == "store"
    entries = json.loads(path.read_text())["tokens"]
    assert entries == [{"principal": "sh-1", "role": "store", "sha256": hash_token(made["token"]),
                        "stores": ["SH-0001", "SH-0002"]}]
    assert made["token"] not in path.read_text() and path.stat().st_mode & 0o077 == 0
    assert TokenTable(path).lookup(made["token"]).stores == {"SH-0001", "SH-0002"}
    status, listed, _ = _token_cli(capsys, "list", "--file", str(path))
    assert status == 0 and listed == [{"principal": "sh-1", "role": "store", "stores": ["SH-0001", "SH-0002"]}]
    for argv, reason in ((["revoke", "--principal", "nobody"], "NOT_FOUND"),
                         (["new", "--principal", "s", "--role", "store"], "INVALID_ARGUMENT"),   # no --store
                         (["new", "--principal", "s", "--role", "root"], "INVALID_ARGUMENT"),
                         (["new", "--role", "reader"], "INVALID_ARGUMENT")):                      # no --principal
        status, out, err = _token_cli(capsys, *argv, "--file", str(path))
        assert (status, out, json.loads(err)["error"]) == (1, None, reason), argv
    assert json.loads(path.read_text())["tokens"] == entries          # a refused edit writes nothing
    assert _token_cli(capsys, "list", "--file", str(tmp_path / "none.json"))[0] == 1


# -- TLS ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pkis(tmp_path_factory) -> SimpleNamespace:
    directory = tmp_path_factory.mktemp("pki")
    return SimpleNamespace(**{name: make_pki(directory, name) for name in ("test", "other", "next")})


class _Server:
    """An in-process server over a small engine, stopped on exit."""

    def __init__(self, **kw: Any) -> None:
        self.eng = pyomni.Engine(pyomni.demo_network(**NETWORK))
        self.server, port = create_server("127.0.0.1:0", self.eng, **kw)
        self.address = f"127.0.0.1:{port}"

    def __enter__(self) -> _Server:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop(None)


def _echo(address: str, **kw: Any) -> bytes:
    with pyomni.Client(address, timeout=3, **kw) as c:
        return c.echo(b"hi")


def test_tls_needs_a_client_that_trusts_the_servers_ca(pkis):
    with _Server(tls=CertificateFiles(pkis.test.server_cert, pkis.test.server_key)) as s:
        assert _echo(s.address, ca=pkis.test.ca) == b"hi"
        assert _echo(f"localhost:{s.address.rsplit(':', 1)[1]}", ca=pkis.test.ca) == b"hi"
        assert _echo(s.address, ca=pkis.test.ca, server_name="localhost") == b"hi"
        for kw in ({"ca": pkis.other.ca}, {}, {"ca": pkis.test.ca, "server_name": "elsewhere.example"}):
            with pytest.raises(errors.Unavailable):       # another CA; plain text; a name not on the certificate
                _echo(s.address, **kw)


def test_mutual_tls_needs_a_client_certificate_the_client_ca_signed(pkis, capsys):
    t, o = pkis.test, pkis.other
    with _Server(tls=CertificateFiles(t.server_cert, t.server_key, client_ca=t.ca)) as s:
        assert _echo(s.address, ca=t.ca, cert=t.client_cert, key=t.client_key) == b"hi"
        for kw in ({"ca": t.ca}, {"ca": t.ca, "cert": o.client_cert, "key": o.client_key}, {}):
            with pytest.raises(errors.Unavailable):
                _echo(s.address, **kw)
        # the CLI's client flags are the same options
        stock = ["stock", s.eng.network.skus[0], "--address", s.address, "--timeout", "3", "--tls-ca", str(t.ca)]
        assert main([*stock, "--tls-cert", str(t.client_cert), "--tls-key", str(t.client_key)]) == 0
        assert main(stock) == 1 and json.loads(capsys.readouterr().err)["error"] == "UNAVAILABLE"


def test_tls_and_tokens_together(pkis, tmp_path):
    path = tmp_path / "tokens.json"
    path.write_text(tokens_document([_token_entry("t-admin", "ops", "admin")]))
    with _Server(tls=CertificateFiles(pkis.test.server_cert, pkis.test.server_key), tokens=TokenTable(path)) as s:
        assert _echo(s.address, ca=pkis.test.ca, token="t-admin") == b"hi"
        with pytest.raises(errors.Unauthenticated):
            _echo(s.address, ca=pkis.test.ca)


def _install(source: Path, target: Path) -> None:
    """Replace ``target`` atomically with a copy of ``source``, with a new modification time."""
    tmp = target.with_name(target.name + ".new")
    shutil.copyfile(source, tmp)
    later = time.time_ns() + 2_000_000_000
    os.utime(tmp, ns=(later, later))
    os.replace(tmp, target)


def test_a_renewed_certificate_is_served_from_the_next_connection_and_a_broken_one_is_not(pkis, tmp_path, caplog):
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    _install(pkis.test.server_cert, cert)
    _install(pkis.test.server_key, key)
    files = CertificateFiles(cert, key)
    with _Server(tls=files) as s:
        assert _echo(s.address, ca=pkis.test.ca) == b"hi"
        _install(pkis.next.server_cert, cert)                   # renewed by another CA
        _install(pkis.next.server_key, key)
        assert _echo(s.address, ca=pkis.next.ca) == b"hi"
        with pytest.raises(errors.Unavailable):
            _echo(s.address, ca=pkis.test.ca)
        assert files.reloads == 1
        with caplog.at_level(logging.ERROR, logger="pyomni.server"):
            _install(pkis.other.server_cert, cert)              # a certificate without its key
            with pytest.raises(errors.Unavailable):
                _echo(s.address, ca=pkis.other.ca)
            assert _echo(s.address, ca=pkis.next.ca) == b"hi"   # the previous pair is still served
        assert files.reloads == 1
        assert any("not reloaded" in r.getMessage() for r in caplog.records)
        _install(pkis.other.server_key, key)                    # the pair complete again
        assert _echo(s.address, ca=pkis.other.ca) == b"hi"
        assert files.reloads == 2


def test_a_pair_renewed_while_it_is_being_read_is_read_again_not_mixed(pkis, tmp_path, monkeypatch):
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    _install(pkis.test.server_cert, cert)
    _install(pkis.test.server_key, key)
    read_bytes = Path.read_bytes
    renewals = []

    def renewed_after_reading_the_certificate(path: Path) -> bytes:
        data = read_bytes(path)
        if path == cert and not renewals:         # the renewal lands between reading the cert and its key
            renewals.append(path)
            _install(pkis.next.server_cert, cert)
            _install(pkis.next.server_key, key)
        return data

    monkeypatch.setattr(Path, "read_bytes", renewed_after_reading_the_certificate)
    files = CertificateFiles(cert, key)
    monkeypatch.undo()
    assert renewals
    with _Server(tls=files) as s:
        assert _echo(s.address, ca=pkis.next.ca) == b"hi"      # not the old certificate with the new key


def test_bad_certificate_files_are_refused_at_start(pkis, tmp_path):
    t = pkis.test
    for cert, key, ca, field in ((t.server_cert, tmp_path / "none.key", None, "tls_key"),
                                 (t.server_cert, pkis.other.server_key, None, "tls_cert"),
                                 (t.server_cert, t.server_key, tmp_path / "none.pem", "tls_client_ca"),
                                 (t.server_cert, t.server_key, t.server_key, "tls_cert")):   # a key is no CA
        with pytest.raises(errors.InvalidArgument) as caught:
            CertificateFiles(cert, key, ca)
        assert caught.value.field == field


# -- plain text stays on loopback --------------------------------------------------------------
@pytest.mark.parametrize(("address", "local"), [
    ("127.0.0.1:50051", True), ("127.8.0.1:1", True), ("localhost:50051", True), ("[::1]:50051", True),
    ("unix:/tmp/pyomni.sock", True), ("unix:///tmp/pyomni.sock", True), ("unix-abstract:pyomni", True),
    ("0.0.0.0:50051", False), ("[::]:50051", False), (":50051", False), ("10.1.2.3:50051", False),
    ("inventory.internal:50051", False), ("localhost.example.com:1", False), ("[::ffff:10.0.0.1]:1", False),
])
def test_is_local(address, local):
    assert is_local(address) is local


def test_an_exposed_address_needs_tls_and_tokens_or_insecure(pkis, tmp_path, monkeypatch):
    monkeypatch.delenv("PYOMNI_TOKENS", raising=False)
    tokens = tmp_path / "tokens.json"
    tokens.write_text(tokens_document([_token_entry("t", "ops", "admin")]))
    tls = {"tls_cert": str(pkis.test.server_cert), "tls_key": str(pkis.test.server_key)}
    for kw, missing in (({}, ("TLS", "tokens")), (tls, ("tokens",)), ({"tokens": str(tokens)}, ("TLS",))):
        with pytest.raises(errors.FailedPrecondition) as caught:
            _security(ServerConfig(address="0.0.0.0:0", **kw))
        assert caught.value.field == "address" and all(m in str(caught.value) for m in missing)
    assert _security(ServerConfig(address="0.0.0.0:0", insecure=True)) == (None, None)
    assert _security(ServerConfig(address="127.0.0.1:0")) == (None, None)
    table, files = _security(ServerConfig(address="0.0.0.0:0", tokens=str(tokens), **tls))
    assert len(table) == 1 and files is not None and not files.mutual
    monkeypatch.setenv("PYOMNI_TOKENS", tokens.read_text())             # tokens from the environment count
    assert _security(ServerConfig(address="0.0.0.0:0", **tls))[0] is not None
    with pytest.raises(errors.InvalidArgument):
        _security(ServerConfig(address="127.0.0.1:0", tls_cert=str(pkis.test.server_cert)))
    with pytest.raises(errors.InvalidArgument):
        _security(ServerConfig(address="127.0.0.1:0", tls_client_ca=str(pkis.test.ca)))


def test_serve_refuses_plain_text_on_an_exposed_address_before_opening_anything(tmp_path):
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if k != "PYOMNI_TOKENS"}
    done = subprocess.run([sys.executable, "-m", "pyomni.cli", "serve", "--address", "0.0.0.0:0", "--metrics-port",
                           "0", "--data-dir", str(data)], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 1
    error = json.loads(done.stderr.strip().splitlines()[-1])
    assert (error["error"], error["field"]) == ("FAILED_PRECONDITION", "address") and "--insecure" in error["message"]
    assert not data.exists()


# -- client options ----------------------------------------------------------------------------
def test_client_tls_options_are_checked(pkis, tmp_path):
    for kw, field in (({"ca": tmp_path / "none.pem"}, "ca"), ({"ca": tmp_path}, "ca"),
                      ({"cert": pkis.test.client_cert}, "key"), ({"key": pkis.test.client_key}, "cert"),
                      ({"cert": tmp_path / "none.pem", "key": pkis.test.client_key}, "cert")):
        with pytest.raises(errors.InvalidArgument) as caught:
            pyomni.Client("127.0.0.1:1", **kw)
        assert caught.value.field == field, kw


def test_the_client_reads_its_token_from_the_environment(secured, monkeypatch):
    monkeypatch.setenv("PYOMNI_TOKEN", secured.tokens["reader"])
    with pyomni.Client(secured.address, timeout=5) as c:
        assert c.echo(b"env") == b"env"
        with pytest.raises(errors.PermissionDenied):
            c.upsert_locations([])
    with pyomni.Client(secured.address, token="pyo_guess", timeout=5) as c, pytest.raises(errors.Unauthenticated):
        c.echo()                                                         # an explicit token wins


def test_the_client_refuses_to_send_a_token_in_plain_text_off_the_machine():
    with pytest.raises(errors.InvalidArgument) as info:
        pyomni.Client("10.1.2.3:50051", token="t-1")
    assert info.value.field == "token"
    pyomni.Client("10.1.2.3:50051", token="t-1", insecure=True).close()   # told so
    pyomni.Client("127.0.0.1:1", token="t-1").close()                     # loopback
    pyomni.Client("10.1.2.3:50051").close()                               # no token to leak


def test_metrics_stay_on_loopback_unless_told():
    from grpc_server.server import ServerConfig, _metrics_host

    assert _metrics_host(ServerConfig(address="0.0.0.0:50051")) == "127.0.0.1"
    assert _metrics_host(ServerConfig(address="192.168.1.5:50051")) == "127.0.0.1"
    assert _metrics_host(ServerConfig(address="unix:/tmp/pyomni.sock")) == "127.0.0.1"
    assert _metrics_host(ServerConfig(address="127.0.0.2:50051")) == "127.0.0.2"
    assert _metrics_host(ServerConfig(address="0.0.0.0:50051", metrics_host="0.0.0.0")) == "0.0.0.0"


def test_serve_listens_on_a_unix_socket_in_plain_text(tmp_path):
    from grpc_server.launch import ServerProcess

    sock = f"unix:{tmp_path}/pyomni.sock"
    with ServerProcess(tmp_path / "data", ["--address", sock, "--stores", "8", "--warehouses", "1",
                                           "--skus", "5"]) as server:
        assert server.address == sock
        with pyomni.Client(sock, token="unused-without-tokens") as client:   # a socket is local: no refusal
            assert client.echo(b"over a socket") == b"over a socket"

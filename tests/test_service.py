"""The gRPC service end to end: a real ``pyomni serve`` process on a free port, called over loopback."""

from __future__ import annotations

import itertools
import json
import re
import shlex
import shutil
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pyarrow as pa
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

import pyomni
from grpc_server import SERVICE_NAMES, STATUS_CODES, status_of
from grpc_server.launch import ServerProcess
from pyomni import errors
from pyomni.v1 import inventory_pb2, inventory_pb2_grpc, routing_pb2, routing_pb2_grpc, selling_pb2, types_pb2
from pyomni.wire import ERROR_DOMAIN, error_class

pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")

NETWORK = ["--stores", "60", "--warehouses", "2", "--skus", "400", "--seed", "5"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with ServerProcess(tmp_path_factory.mktemp("data"), NETWORK) as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    with pyomni.Client(server.address, timeout=10) as c:
        c.wait_ready()
        yield c


@pytest.fixture(scope="module")
def stubs(server):
    channel = grpc.insecure_channel(server.address)
    yield routing_pb2_grpc.RoutingServiceStub(channel), inventory_pb2_grpc.InventoryServiceStub(channel), channel
    channel.close()


@pytest.fixture(scope="module")
def net():
    # the same demo network the server builds from NETWORK
    return pyomni.demo_network(stores=60, warehouses=2, skus=400, seed=5)


_taken = itertools.count(1)


def _fresh_sku(client: pyomni.Client, net: pyomni.Network) -> str:
    """A SKU no other test uses, with its demo stock taken to zero everywhere."""
    sku = net.skus[-next(_taken)]
    cells = client.availability(sku)
    if cells:
        client.apply_stock_events([{"location": c.location, "sku": sku, "event": "set", "qty": 0, "safety": 0}
                                   for c in cells])
    assert client.available(sku) == 0
    return sku


def _status(exc: grpc.RpcError) -> tuple[grpc.StatusCode, error_details_pb2.ErrorInfo, list]:
    st = rpc_status.from_call(exc)
    info = error_details_pb2.ErrorInfo()
    violations = []
    for d in st.details:
        if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            d.Unpack(info)
        elif d.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            br = error_details_pb2.BadRequest()
            d.Unpack(br)
            violations = list(br.field_violations)
    return exc.code(), info, violations


# -- error mapping ---------------------------------------------------------------------
def test_every_error_class_has_a_status_and_comes_back_as_itself():
    assert set(STATUS_CODES) == set(errors.ALL_ERRORS)
    for cls in errors.ALL_ERRORS:
        st = status_of(cls("boom", field="order.lines[0]"))
        assert st.code == STATUS_CODES[cls].value[0] and st.message == "boom"
        info = error_details_pb2.ErrorInfo()
        assert st.details[0].Unpack(info) and info.reason == cls.reason and info.domain == ERROR_DOMAIN
        assert info.metadata["field"] == "order.lines[0]"
        assert error_class(info.reason) is cls
        bad_request = [d for d in st.details if d.Is(error_details_pb2.BadRequest.DESCRIPTOR)]
        assert bool(bad_request) == (STATUS_CODES[cls] is grpc.StatusCode.INVALID_ARGUMENT)


# -- every RPC -------------------------------------------------------------------------------
def test_health_and_reflection(server):
    channel = grpc.insecure_channel(server.address)
    health = health_pb2_grpc.HealthStub(channel)
    for name in ("", *SERVICE_NAMES):
        assert health.Check(health_pb2.HealthCheckRequest(service=name)).status == \
            health_pb2.HealthCheckResponse.SERVING
    refl = reflection_pb2_grpc.ServerReflectionStub(channel)
    answer = next(refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
    listed = {s.name for s in answer.list_services_response.service}
    assert set(SERVICE_NAMES) <= listed and "grpc.health.v1.Health" in listed
    channel.close()


def test_echo(client):
    assert client.echo(b"x" * 300) == b"x" * 300
    assert client.echo(b"x" * 10, response_bytes=700) == bytes(700)
    with pytest.raises(errors.InvalidArgument):
        client.echo(response_bytes=-1)


def test_stock_events_batch_arrow_and_stream(client, net):
    sku = _fresh_sku(client, net)
    a, b = net.ids[0], net.ids[1]
    assert client.apply_stock_events([{"location": a, "sku": sku, "event": "set", "qty": 10, "safety": 2}]) == 1
    table = pa.table({"location": [a, b], "sku": [sku, sku], "event": ["receive", "set"], "qty": [5, 4]})
    assert client.apply_stock_events(table) == 2
    applied, batches = client.stream_stock_events([[{"location": b, "sku": sku, "event": "sale", "qty": 1}],
                                                   [{"location": a, "sku": sku, "event": "adjust", "qty": -3}]])
    assert (applied, batches) == (2, 2)
    assert client.stock(a, sku) == pyomni.StockLevel(a, sku, 12, 0, 2)
    assert client.stock(b, sku).on_hand == 3
    assert client.available(sku) == 10 + 3
    cells = [c for c in client.availability(sku, page_size=1) if c.on_hand]      # pages of one
    assert sorted(c.location for c in cells) == sorted([a, b])


def test_route_order_explains_in_full_only_when_asked(client, net):
    sku = _fresh_sku(client, net)
    home = net.location(3)
    client.apply_stock_events([{"location": home.id, "sku": sku, "event": "set", "qty": 6}])
    plain = client.route_order(pyomni.Order(f"o-{uuid.uuid4().hex[:8]}", [(sku, 1)], destination=(home.lat, home.lon)))
    full = client.route_order(pyomni.Order(f"o-{uuid.uuid4().hex[:8]}", [(sku, 1)], destination=(home.lat, home.lon)),
                              explain=True)
    assert plain.ok and full.ok and plain.shipments[0].location == full.shipments[0].location == home.id
    assert plain.explanation.strategy == "recorded" and plain.explanation.considered == 1   # one shipment
    assert full.explanation.strategy in ("spatial", "sku_scan") and full.explanation.considered >= 1
    assert plain.explanation.policy == full.explanation.policy


def test_routing_life_cycle(client, net):
    sku = _fresh_sku(client, net)
    home = net.location(3)
    far = next(i for i, city in enumerate(net.city) if city != home.city and net.kind[i] == 1)   # another city
    client.apply_stock_events([{"location": home.id, "sku": sku, "event": "set", "qty": 6},
                               {"location": net.ids[far], "sku": sku, "event": "set", "qty": 6}])
    order = pyomni.Order(f"o-{uuid.uuid4().hex[:8]}", [(sku, 2)], destination=(home.lat, home.lon))
    quote = client.quote(order)
    assert quote.status is pyomni.AllocationStatus.QUOTED and client.stock(home.id, sku).reserved == 0
    a = client.route_order(order, request_id=f"req-{order.id}")
    assert a.status is pyomni.AllocationStatus.ALLOCATED and a.shipments[0].location == home.id
    assert a.explanation.considered >= 1 and a.explanation.policy
    assert client.stock(home.id, sku).reserved == 2
    assert client.reservation(a.reservation_id).state is pyomni.ReservationState.HELD
    # the store rejects: re-routed elsewhere, the rejecting store's hold released
    b = client.reroute(a.reservation_id, home.id)
    assert b.status is pyomni.AllocationStatus.ALLOCATED and b.shipments[0].location == net.ids[far]
    assert client.stock(home.id, sku).reserved == 0 and client.stock(net.ids[far], sku).reserved == 2
    r = client.confirm(a.reservation_id)
    assert r.state is pyomni.ReservationState.CONFIRMED and client.stock(net.ids[far], sku).on_hand == 4
    listed = list(client.reservations(pyomni.ReservationState.CONFIRMED, page_size=1))
    assert a.reservation_id in {x.id for x in listed}
    other = client.route_order(pyomni.Order(order.id + "-b", [(sku, 1)], destination=(home.lat, home.lon)))
    assert client.release(other.reservation_id).state is pyomni.ReservationState.RELEASED


def test_batch_and_stream_route_each_order_and_report_errors_per_order(client, net):
    sku = _fresh_sku(client, net)
    client.apply_stock_events([{"location": net.ids[5], "sku": sku, "event": "set", "qty": 50}])
    dest = (float(net.lat[5]), float(net.lon[5]))
    orders = [pyomni.Order(f"b-{uuid.uuid4().hex[:8]}", [(sku, 1)], destination=dest) for _ in range(5)]
    orders.insert(2, pyomni.Order("b-bad", [("NO-SUCH-SKU", 1)], destination=dest))
    got = client.route_orders(orders)
    assert [type(x).__name__ for x in got] == ["Allocation"] * 2 + ["UnknownSku"] + ["Allocation"] * 3
    assert got[2].field == "lines[0].sku"
    streamed = list(client.route_stream((pyomni.Order(f"s-{i}-{uuid.uuid4().hex[:6]}", [(sku, 1)], destination=dest)
                                         for i in range(20)), batch_size=7))
    assert all(isinstance(x, pyomni.Allocation) and x.reservation_id for x in streamed)
    assert client.stock(net.ids[5], sku).reserved == 25


def test_store_locator_and_pickup(client, net):
    sku = _fresh_sku(client, net)
    store = net.location(7)
    client.apply_stock_events([{"location": store.id, "sku": sku, "event": "set", "qty": 3}])
    near = client.available_near(sku, (store.lat, store.lon), radius_km=5)
    assert near[0].location == store.id and near[0].available == 3
    pickup = client.find_pickup_locations([(sku, 2)], (store.lat, store.lon), radius_km=5)
    assert [p.location for p in pickup][:1] == ([store.id] if pyomni.Capability.PICKUP in store.capabilities else [])


def test_upsert_locations_then_route_from_the_new_store(client, net):
    sku = _fresh_sku(client, net)
    store = pyomni.Location(f"LHASA-{uuid.uuid4().hex[:4]}", pyomni.LocationKind.STORE, 29.65, 91.13, city="Lhasa")
    assert client.upsert_locations([store]) == (1, 0)
    client.apply_stock_events([{"location": store.id, "sku": sku, "event": "set", "qty": 2}])
    a = client.route_order(pyomni.Order(f"t-{uuid.uuid4().hex[:6]}", [(sku, 1)], destination=(29.6, 91.1)))
    assert a.shipments[0].location == store.id


# -- idempotency ------------------------------------------------------------------------------
def test_a_retried_request_returns_the_first_answer(client, net):
    sku = _fresh_sku(client, net)
    client.apply_stock_events([{"location": net.ids[8], "sku": sku, "event": "set", "qty": 5}])
    order = pyomni.Order(f"i-{uuid.uuid4().hex[:8]}", [(sku, 2)], destination=(float(net.lat[8]), float(net.lon[8])))
    rid = uuid.uuid4().hex
    first = client.route_order(order, request_id=rid)
    assert client.route_order(order, request_id=rid) == first
    assert client.stock(net.ids[8], sku).reserved == 2
    confirm_id = uuid.uuid4().hex
    assert client.confirm(first.reservation_id, request_id=confirm_id) == \
        client.confirm(first.reservation_id, request_id=confirm_id)
    with pytest.raises(errors.RequestIdReused):
        client.route_order(pyomni.Order("other", [(sku, 1)], destination=(30.0, 120.0)), request_id=rid)


# -- bad input: the right status, details, and no state change ----------------------------------
def _snapshot(client, net, sku):
    return [client.stock(loc, sku) for loc in net.ids[:10]], len(list(client.reservations()))


@pytest.mark.parametrize(("case", "code", "reason", "field"), [
    ("missing order", grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ORDER", "order"),
    ("no lines", grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ORDER", "order.lines"),
    ("negative qty", grpc.StatusCode.INVALID_ARGUMENT, "INVALID_QUANTITY", "lines[0].qty"),
    ("huge qty", grpc.StatusCode.INVALID_ARGUMENT, "INVALID_QUANTITY", "lines[0].qty"),
    ("nan destination", grpc.StatusCode.INVALID_ARGUMENT, "INVALID_COORDINATES", "order.destination"),
    ("unknown sku", grpc.StatusCode.NOT_FOUND, "UNKNOWN_SKU", "lines[0].sku"),
    ("unknown pickup", grpc.StatusCode.NOT_FOUND, "UNKNOWN_LOCATION", "pickup_location"),
    ("unknown policy", grpc.StatusCode.NOT_FOUND, "UNKNOWN_POLICY", "policy"),
    ("negative ttl", grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT", "ttl_seconds"),
])
def test_bad_route_requests(stubs, client, net, case, code, reason, field):
    routing, _, _ = stubs
    sku = net.skus[0]
    good = types_pb2.Order(id="bad-1", lines=[types_pb2.OrderLine(sku=sku, qty=1)],
                           destination=types_pb2.LatLng(latitude=31.2, longitude=121.4))
    req = routing_pb2.RouteOrderRequest(request_id=uuid.uuid4().hex, order=good)
    if case == "missing order":
        req.ClearField("order")
    elif case == "no lines":
        del req.order.lines[:]
    elif case == "negative qty":
        req.order.lines[0].qty = -1
    elif case == "huge qty":
        req.order.lines[0].qty = 2**62
    elif case == "nan destination":
        req.order.destination.latitude = float("nan")
    elif case == "unknown sku":
        req.order.lines[0].sku = "NOPE"
    elif case == "unknown pickup":
        req.order.ClearField("destination")
        req.order.pickup_location = "NOWHERE"
    elif case == "unknown policy":
        req.policy = "no-such-policy"
    elif case == "negative ttl":
        req.ttl_seconds = -5
    before = _snapshot(client, net, sku)
    with pytest.raises(grpc.RpcError) as caught:
        routing.RouteOrder(req)
    got_code, info, violations = _status(caught.value)
    assert (got_code, info.reason, info.metadata.get("field")) == (code, reason, field)
    assert bool(violations) == (code is grpc.StatusCode.INVALID_ARGUMENT)
    assert _snapshot(client, net, sku) == before


def test_oversized_batch_and_bad_pages_and_unknown_ids(stubs, client, net):
    routing, inventory, _ = stubs
    order = types_pb2.Order(id="x", lines=[types_pb2.OrderLine(sku=net.skus[0], qty=1)],
                            destination=types_pb2.LatLng(latitude=31.2, longitude=121.4))
    batch = routing_pb2.RouteOrdersRequest(requests=[routing_pb2.RouteOrderRequest(order=order)] * 10_001)
    before = _snapshot(client, net, net.skus[0])
    with pytest.raises(grpc.RpcError) as caught:
        routing.RouteOrders(batch)
    assert _status(caught.value)[0] is grpc.StatusCode.INVALID_ARGUMENT
    assert _status(caught.value)[1].metadata["field"] == "requests"
    for request, field in ((routing_pb2.ListReservationsRequest(page_size=5000), "page_size"),
                           (routing_pb2.ListReservationsRequest(page_token="%%%"), "page_token")):
        with pytest.raises(grpc.RpcError) as caught:
            routing.ListReservations(request)
        assert _status(caught.value)[1].metadata["field"] == field
    assert _snapshot(client, net, net.skus[0]) == before
    with pytest.raises(errors.UnknownReservation):
        client.confirm("R-NOPE")
    with pytest.raises(errors.UnknownLocation):
        client.stock("NOWHERE", net.skus[0])
    with pytest.raises(errors.InvalidCoordinates):
        client.available_near(net.skus[0], (float("nan"), 120.0))
    with pytest.raises(grpc.RpcError) as caught:          # kind UNSPECIFIED
        inventory.ApplyStockEvents(inventory_pb2.ApplyStockEventsRequest(events=[inventory_pb2.StockEvent(
            location=net.ids[0], sku=net.skus[0], kind=0, qty=1)]))
    assert _status(caught.value)[1].metadata["field"] == "events[0].kind"
    with pytest.raises(errors.UnknownLocation):   # one bad event: the whole batch is refused
        client.apply_stock_events([{"location": net.ids[0], "sku": net.skus[0], "event": "receive", "qty": 1},
                                   {"location": "NOWHERE", "sku": net.skus[0], "event": "receive", "qty": 1}])
    with pytest.raises(errors.InvalidArgument):
        client.upsert_locations([pyomni.Location("NAN-1", pyomni.LocationKind.STORE, float("nan"), 1.0)])
    assert _snapshot(client, net, net.skus[0]) == before


def test_a_closed_port_is_unavailable():
    with pyomni.Client("127.0.0.1:1", timeout=2) as c, pytest.raises(errors.Unavailable):
        c.echo()


# -- concurrency: no oversell ------------------------------------------------------------------
def test_many_clients_racing_for_the_last_units_never_oversell(server, client, net):
    sku = _fresh_sku(client, net)
    stocked = net.ids[10:13]
    client.apply_stock_events([{"location": loc, "sku": sku, "event": "set", "qty": 3} for loc in stocked])
    dest = (float(net.lat[10]), float(net.lon[10]))
    start = threading.Barrier(8)

    def race(worker: int) -> list[pyomni.Allocation]:
        with pyomni.Client(server.address, timeout=10) as c:
            start.wait()
            return [c.route_order(pyomni.Order(f"race-{sku}-{worker}-{i}", [(sku, 1)], destination=dest))
                    for i in range(6)]

    with ThreadPoolExecutor(8) as pool:
        results = [a for batch in pool.map(race, range(8)) for a in batch]
    won = [a for a in results if a.status is pyomni.AllocationStatus.ALLOCATED]
    assert len(won) == 9 and len(results) - len(won) == 39
    assert all(a.status is pyomni.AllocationStatus.UNFULFILLABLE for a in results if a not in won)
    assert sum(client.stock(loc, sku).reserved for loc in stocked) == 9
    held = {r.id for r in client.reservations(pyomni.ReservationState.HELD)}
    assert {a.reservation_id for a in won} <= held
    assert client.available(sku) == 0


# -- graceful shutdown keeps every acknowledged reservation --------------------------------
def test_graceful_shutdown_loses_no_acknowledged_reservation(tmp_path):
    acknowledged: list[pyomni.Allocation] = []
    server = ServerProcess(tmp_path, NETWORK).start()
    net = pyomni.demo_network(stores=60, warehouses=2, skus=400, seed=5)
    stop = threading.Event()

    def hammer(worker: int) -> None:
        with pyomni.Client(server.address, timeout=5) as c:
            for order in pyomni.demo_orders(net, 2000, seed=worker):
                if stop.is_set():
                    return
                try:
                    a = c.route_order(pyomni.Order(f"{worker}-{order.id}", order.lines, destination=order.destination))
                except errors.Unavailable:      # refused once the server stops taking calls
                    return
                if a.reservation_id:
                    acknowledged.append(a)

    threads = [threading.Thread(target=hammer, args=(w,)) for w in range(3)]
    for t in threads:
        t.start()
    while len(acknowledged) < 50:
        threading.Event().wait(0.01)
    assert server.stop() == 0             # SIGTERM while the clients are still calling
    stop.set()
    for t in threads:
        t.join()
    assert "stopped" in server.messages()
    with ServerProcess(tmp_path, NETWORK) as again, pyomni.Client(again.address) as c:
        assert "recovered" in again.messages()
        for a in acknowledged:
            r = c.reservation(a.reservation_id)
            assert r.order_id == a.order_id and r.state is pyomni.ReservationState.HELD
            assert r.shipments == a.shipments


# -- the README's commands, as written, against the server `make serve` starts --------------------
_README = Path(__file__).resolve().parents[1] / "README.md"
_TLS_HEADING = "### On a network: TLS, mutual TLS and tokens"


def _readme_bash(heading: str) -> list[tuple[str, str]]:
    """``(command, comment)`` of every line of the ```bash blocks under ``heading`` (to the next heading)."""
    text = _README.read_text()
    start = text.index(f"\n{heading}\n") + 1
    ends = [i for i in (text.find("\n## ", start), text.find("\n### ", start)) if i != -1]
    section = text[start:min(ends)] if ends else text[start:]
    lines = []
    for block in section.split("```bash")[1:]:
        for line in block.split("```")[0].strip().splitlines():
            command, _, comment = line.partition("  #")
            lines.append((command.strip(), comment.strip(" #")))
    return lines


def _readme_service_block() -> list[str]:
    """The plain-text commands of "## The service" (its TLS subsection is run on its own)."""
    return [command for command, _ in _readme_bash("## The service")]


def _grpcurl_call(argv: list[str], channel: grpc.Channel, metadata: tuple[tuple[str, str], ...] = ()) -> object:
    """The call a ``grpcurl ... -d BODY ADDRESS METHOD`` line makes, made on ``channel``; returns the answer."""
    from google.protobuf import json_format

    body, method = json.loads(argv[argv.index("-d") + 1]), argv[-1]
    service, name = method.rsplit("/", 1)
    module = {"pyomni.v1.RoutingService": routing_pb2, "pyomni.v1.InventoryService": inventory_pb2,
              "pyomni.v1.FlashSaleService": selling_pb2}[service]
    desc = module.DESCRIPTOR.services_by_name[service.rsplit(".", 1)[1]].methods_by_name[name]
    request = json_format.ParseDict(body, module.__dict__[desc.input_type.name]()
                                    if desc.input_type.name in module.__dict__
                                    else types_pb2.__dict__[desc.input_type.name]())
    out_cls = (module.__dict__.get(desc.output_type.name) or types_pb2.__dict__[desc.output_type.name])
    call = channel.unary_unary(f"/{method}", request_serializer=lambda m: m.SerializeToString(),
                               response_deserializer=out_cls.FromString)
    return call(request, timeout=10, metadata=metadata)     # raises if the body or the ids are wrong


def _run_readme_commands(commands: list[str], address: str, channel: grpc.Channel, *, cli: tuple[str, ...] = (),
                         metadata: tuple[tuple[str, str], ...] = ()) -> None:
    """Each ``pyomni`` line through the CLI (``--address`` and ``cli`` appended), each grpcurl call on ``channel``."""
    from pyomni.cli import main

    assert any(c.startswith("pyomni route") for c in commands) and any(c.startswith("grpcurl") for c in commands)
    for command in commands:
        argv = shlex.split(command)
        if argv[0] == "pyomni":
            status = main([*argv[1:], "--address", address, *cli])
            assert status == (1 if "NOPE" in command else 0), command
        elif "-d" in argv:       # list / health: reflection and health are covered above
            _grpcurl_call(argv, channel, metadata)


def test_the_readme_commands_work_against_the_default_server(tmp_path, capsys):
    with ServerProcess(tmp_path) as server, grpc.insecure_channel(server.address) as channel:
        _run_readme_commands(_readme_service_block(), server.address, channel)   # pyomni serve's defaults
    printed = capsys.readouterr().out
    assert '"state": "CONFIRMED"' in printed and '"status": "ALLOCATED"' in printed


def test_the_readme_commands_work_with_tls_and_tokens(tmp_path, monkeypatch, capsys):
    """The README's TLS subsection as written (its certificate, tokens, both serve lines, a client command
    and a grpcurl call), and the plain commands above it again, as an admin, against a TLS server with tokens."""
    import grpc_server
    from grpc_server.server import _security
    from pyomni.cli import main

    monkeypatch.chdir(tmp_path)                  # the subsection's relative file names land here
    monkeypatch.delenv("PYOMNI_TOKEN", raising=False)
    monkeypatch.delenv("PYOMNI_TOKENS", raising=False)
    made: dict[str, dict[str, str]] = {}         # principal -> what `pyomni token new` printed
    variables: dict[str, str] = {}
    serve_lines, client_lines = [], []
    for command, comment in _readme_bash(_TLS_HEADING):
        argv = shlex.split(command)
        if argv[0] == "openssl":
            if shutil.which("openssl"):
                subprocess.run(["bash", "-c", command], check=True, capture_output=True, timeout=60)
            else:                                # the same three files, from the test CA
                from certs import make_pki

                pki = make_pki(tmp_path / "pki")
                for source, name in ((pki.server_cert, "server.pem"), (pki.server_key, "server.key"),
                                     (pki.ca, "ca.pem")):
                    shutil.copyfile(source, name)
        elif argv[:2] == ["pyomni", "token"]:
            capsys.readouterr()
            assert main(argv[1:]) == 0, command
            out = capsys.readouterr().out
            if argv[2] == "new":
                made[json.loads(out)["principal"]] = json.loads(out)
            else:
                assert "sha256" not in out and "pyo_" not in out and all(p in out for p in made)
        elif argv[:2] == ["pyomni", "serve"]:
            serve_lines.append(argv)
        elif re.fullmatch(r"[A-Z_]+=\S+", command):      # NAME=pyo_...   # the token printed for <principal>
            named = [p for p in made if re.search(rf"(?<![\w-]){re.escape(p)}(?![\w-])", comment)]
            assert len(named) == 1, (command, comment)
            variables[command.split("=")[0]] = made[named[0]]["token"]
        else:
            client_lines.append(argv)
    assert {m["role"] for m in made.values()} >= {"admin", "order-system", "store"}
    assert len(serve_lines) == 2 and {a[0] for a in client_lines} == {"pyomni", "grpcurl"}
    admin = next(m["token"] for m in made.values() if m["role"] == "admin")

    # each serve line through the real parser and `pyomni serve`'s own checks (the operator's client CA: any)
    shutil.copyfile("ca.pem", "clients-ca.pem")
    checked: list[tuple[object, object]] = []
    with monkeypatch.context() as patch:
        patch.setattr(grpc_server, "serve", lambda config: checked.append(_security(config)) or 0)
        for argv in serve_lines:
            assert main(argv[1:]) == 0, argv
            tokens, tls = checked[-1]
            assert tls is not None and tls.mutual == ("--tls-client-ca" in argv) and len(tokens) == len(made)

    flags = next(a for a in serve_lines if "--tls-client-ca" not in a)[2:]
    del flags[flags.index("--address"):flags.index("--address") + 2]          # ServerProcess's 127.0.0.1:0
    ca = Path("ca.pem").read_bytes()
    with ServerProcess(tmp_path / "data", flags, start_timeout=120) as server, \
            grpc.secure_channel(server.address, grpc.ssl_channel_credentials(ca)) as channel:
        capsys.readouterr()
        _run_readme_commands(_readme_service_block(), server.address, channel,
                             cli=("--tls-ca", "ca.pem", "--token", admin),
                             metadata=(("authorization", f"Bearer {admin}"),))
        printed = capsys.readouterr().out
        assert '"state": "CONFIRMED"' in printed and '"status": "ALLOCATED"' in printed
        assert main(["stock", "SKU-000001", "--address", server.address, "--tls-ca", "ca.pem"]) == 1
        assert '"UNAUTHENTICATED"' in capsys.readouterr().err
        for argv in client_lines:
            argv = [re.sub(r"\$(\w+)", lambda m: variables[m.group(1)], a) for a in argv]
            if argv[0] == "pyomni":
                argv[argv.index("--address") + 1] = server.address
                assert main(argv[1:]) == 0, argv
                assert "SKU-000001" in capsys.readouterr().out
                continue
            name, _, value = argv[argv.index("-H") + 1].partition(": ")
            cacert = Path(argv[argv.index("-cacert") + 1]).read_bytes()
            with grpc.secure_channel(server.address, grpc.ssl_channel_credentials(cacert)) as own:
                answer = _grpcurl_call(argv, own, ((name.lower(), value),))
            assert answer.location == json.loads(argv[argv.index("-d") + 1])["location"]


def test_metrics_count_calls_by_method_and_code_and_expose_engine_gauges():
    from prometheus_client import generate_latest

    from grpc_server import create_server
    from grpc_server.metrics import Metrics

    eng = pyomni.Engine(pyomni.demo_network(stores=8, warehouses=1, skus=5, seed=1))
    eng.set_stock(eng.network.ids[0], "SKU-000001", 4)
    metrics = Metrics(eng)
    server, port = create_server("127.0.0.1:0", eng, metrics=metrics)
    server.start()
    try:
        with pyomni.Client(f"127.0.0.1:{port}") as c:
            c.echo(b"1")
            c.route_order(pyomni.Order("m-1", [("SKU-000001", 1)], destination=(31.2, 121.4)))
            with pytest.raises(errors.UnknownSku):
                c.stock(eng.network.ids[0], "NOPE")
        text = generate_latest(metrics.registry).decode()
    finally:
        server.stop(None)
    assert 'pyomni_rpc_requests_total{code="OK",method="Echo"} 1.0' in text
    assert 'pyomni_rpc_requests_total{code="NOT_FOUND",method="GetStock"} 1.0' in text
    assert 'pyomni_rpc_latency_seconds_count{method="RouteOrder"} 1.0' in text
    assert 'pyomni_reservations{state="held"} 1.0' in text
    assert "pyomni_available_units 3.0" in text and "pyomni_stock_cells 1.0" in text


def test_a_second_server_on_the_same_data_directory_is_refused(server):
    import sys

    done = subprocess.run([sys.executable, "-m", "pyomni.cli", "serve", "--address", "127.0.0.1:0", "--metrics-port",
                           "0", "--data-dir", str(server.data_dir)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert '"error": "FAILED_PRECONDITION"' in done.stderr and '"field": "data_dir"' in done.stderr


def test_the_server_snapshots_after_so_many_records_bounding_recovery(tmp_path):
    """--snapshot-records: a snapshot once enough journal records accumulate, whatever the clock says."""
    with ServerProcess(tmp_path, [*NETWORK, "--snapshot-every", "0", "--snapshot-records", "40"]) as server, \
            pyomni.Client(server.address) as c:
        start = max(int(p.name) for p in (tmp_path / "snapshots").iterdir() if p.name.isdigit())
        where = c.availability("SKU-000001")[0].location
        for i in range(50):
            c.apply_stock_events([{"location": where, "sku": "SKU-000001", "event": "receive", "qty": 1}],
                                 request_id=f"rcv-{i}")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            lsns = [int(p.name) for p in (tmp_path / "snapshots").iterdir() if p.name.isdigit()]
            if max(lsns) >= start + 40:
                break
            time.sleep(0.2)
        assert max(lsns) >= start + 40


def test_metrics_expose_the_journal_of_an_engine_on_a_directory(tmp_path):
    from prometheus_client import generate_latest

    from grpc_server.metrics import Metrics

    net = pyomni.demo_network(stores=8, warehouses=1, skus=5, seed=1)
    with pyomni.Engine.open(tmp_path, net, fsync="always") as eng:
        for i in range(5):
            eng.set_stock(net.ids[i], "SKU-000001", 4, request_id=f"m-{i}")
        text = generate_latest(Metrics(eng).registry).decode()
    assert "pyomni_journal_records 5.0" in text and "pyomni_journal_durable_lsn 5.0" in text
    assert "pyomni_journal_failed 0.0" in text and "pyomni_journal_commits" in text
    assert "pyomni_journal" not in generate_latest(Metrics(pyomni.Engine(net)).registry).decode()


def test_garbage_arrow_bytes_and_huge_ids_answer_with_their_own_status():
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    from grpc_server import create_server

    eng = pyomni.Engine(pyomni.demo_network(stores=6, warehouses=1, skus=5, seed=2))
    server, port = create_server("127.0.0.1:0", eng)
    server.start()
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        stub = inventory_pb2_grpc.InventoryServiceStub(channel)
        for call, request, code, reason in [
            (stub.ApplyStockEvents, inventory_pb2.ApplyStockEventsRequest(arrow_ipc=b"\x00not arrow" * 50),
             grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
            (stub.GetStock, inventory_pb2.GetStockRequest(location=eng.network.ids[0], sku="S" * 16_000),
             grpc.StatusCode.NOT_FOUND, "UNKNOWN_SKU"),
        ]:
            with pytest.raises(grpc.RpcError) as info:
                call(request, timeout=10)
            assert info.value.code() is code
            status = rpc_status.from_call(info.value)
            found = error_details_pb2.ErrorInfo()
            assert any(d.Unpack(found) for d in status.details) and found.reason == reason
            assert len(status.message) <= 1000
        channel.close()
    finally:
        server.stop(None)
    assert eng.stock_table().num_rows == 0

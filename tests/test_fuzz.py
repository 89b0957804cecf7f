"""Fuzzing the public API (issue 12): every bad input gets a typed error, and a failed call changes nothing.

Two hypothesis tests over the generators of :mod:`fuzzing` (read its docstring
for what is generated and checked):

* ``test_engine_methods_take_any_input`` -- batches of 100 calls of every public
  :class:`pyomni.Engine` method, value class and exported function, on a fresh
  small engine per example (native, plain-Python reference, or journaled);
* ``test_rpcs_take_any_message`` -- batches of 50 calls of every RPC of every
  ``pyomni.v1`` service, against one in-process server whose engine is swapped
  for a fresh one per example.

Each call must succeed or fail with a :class:`pyomni.errors.PyomniError`
(over gRPC: a status other than UNKNOWN / INTERNAL carrying a
``google.rpc.ErrorInfo``) with a bounded message; after a failure (and after
any query) the engine's state fingerprint is unchanged, and its invariants
hold after every call. The run is derandomised (the same calls every time) and
sized for CI: about 80,000 engine calls and 22,000 RPCs in under two minutes on
two cores; the tests count what they made and fail if that drops.
``benchmarks/soak_fuzz.py`` runs the same generators for as long as you like.
"""

from __future__ import annotations

import importlib
import itertools
import time
from pathlib import Path

import fuzzing
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pyomni

#: examples x calls per example: 80,000 engine calls and 22,000 RPCs
ENGINE_EXAMPLES, ENGINE_BATCH = 800, 100
RPC_EXAMPLES, RPC_BATCH = 440, 50
#: the engines examples run on (journaled ones cost more: a directory, a snapshot, a writer thread)
KINDS = ("native", "native", "reference", "native", "reference", "journal")
FUZZ = settings(deadline=None, derandomize=True, database=None, print_blob=False,
                suppress_health_check=list(HealthCheck))


@pytest.fixture(autouse=True)
def _in_a_scratch_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # generated paths are relative too (" ", "SH-PEOPLE\n", ...): they land here, not in the checkout
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory holding a snapshot of a live engine (``Engine.load`` reads it)."""
    return fuzzing.saved_snapshot(tmp_path_factory.mktemp("saved"))


def test_every_public_method_and_rpc_is_fuzzed():
    # a new Engine method, export or RPC without a spec fails here (not silently skipped)
    fuzzing.engine_calls()
    assert set(fuzzing.engine_methods()) == set(fuzzing.SPECS) | set(fuzzing.EXCLUDED)
    modules = [importlib.import_module(f"pyomni.v1.{p.stem}")
               for p in sorted(Path(pyomni.__file__).parent.joinpath("v1").glob("*_pb2.py"))]
    with_services = {m.__name__ for m in modules if m.DESCRIPTOR.services_by_name}
    assert with_services == {m.__name__ for m in fuzzing.SERVICES}
    names = {m.name for m in fuzzing.rpc_methods()}
    declared = {m.name for mod in modules for s in mod.DESCRIPTOR.services_by_name.values() for m in s.methods}
    assert names == declared and len(names) >= 33


def test_engine_methods_take_any_input(saved, tmp_path):
    checker = fuzzing.Checker(saved=saved)
    make = fuzzing.engine_calls()
    examples = itertools.count()

    @settings(FUZZ, max_examples=ENGINE_EXAMPLES)
    @given(st.sampled_from(KINDS), fuzzing.seeds(ENGINE_BATCH))
    def run(kind, seeds):
        live = fuzzing.live_engine(kind, fuzzing.fresh_tmp(tmp_path, next(examples)))
        try:
            checker.run_engine(live, [make(seed, i) for i, seed in enumerate(seeds)])
            checker.check_recovery(live)
        finally:
            live.close()

    start = time.perf_counter()
    run()
    print(f"\n{time.perf_counter() - start:.1f} s\n{checker.summary()}")
    assert not checker.violations
    assert checker.calls >= ENGINE_EXAMPLES * ENGINE_BATCH
    # every method was called, and most were answered at least once (the generators reach past the checks)
    called = {k.rsplit(" ", 1)[0] for k in checker.by_method}
    assert called >= set(fuzzing.SPECS) | set(fuzzing.MODULE_SPECS)
    answered = {k.rsplit(" ", 1)[0] for k in checker.by_method if k.endswith(" ok")}
    assert len(answered) >= 0.9 * len(called), sorted(called - answered)


@pytest.fixture(scope="module")
def server():
    with fuzzing.served(workers=8) as (slot, channel):
        yield slot, channel


def test_rpcs_take_any_message(server, tmp_path):
    slot, channel = server
    checker = fuzzing.Checker()
    make = fuzzing.rpc_calls()
    examples = itertools.count()

    @settings(FUZZ, max_examples=RPC_EXAMPLES)
    @given(st.sampled_from(KINDS[:5]), fuzzing.seeds(RPC_BATCH))
    def run(kind, seeds):
        live = fuzzing.live_engine(kind, fuzzing.fresh_tmp(tmp_path, next(examples)))
        slot.target = live.engine
        try:
            checker.run_rpcs(channel, live, [make(seed, i) for i, seed in enumerate(seeds)])
            checker.check_server(channel)
        finally:
            live.close()

    start = time.perf_counter()
    run()
    print(f"\n{time.perf_counter() - start:.1f} s\n{checker.summary()}")
    assert not checker.violations
    assert checker.rpcs >= RPC_EXAMPLES * RPC_BATCH
    called = {k.rsplit(" ", 1)[0] for k in checker.by_method}
    assert called == {m.name for m in fuzzing.rpc_methods()}
    answered = {k.rsplit(" ", 1)[0] for k in checker.by_method if k.endswith(" OK")}
    assert len(answered) >= 0.9 * len(called), sorted(called - answered)


def test_the_fuzz_is_big_enough():
    # the sizes above are the contract with CI: at least 100,000 calls, 20,000 of them RPCs
    assert ENGINE_EXAMPLES * ENGINE_BATCH + RPC_EXAMPLES * RPC_BATCH >= 100_000
    assert RPC_EXAMPLES * RPC_BATCH >= 20_000


def test_a_watch_that_ended_gives_its_thread_back(server, tmp_path):
    # WatchFlashSale slept min_interval_ms after each message, however long, and deaf to the caller leaving: eight
    # watches asking for a day's interval held all eight handler threads of the server for that day
    from pyomni.v1 import selling_pb2

    slot, channel = server
    live = fuzzing.live_engine("native", tmp_path)
    slot.target = live.engine
    watch = channel.unary_stream("/pyomni.v1.FlashSaleService/WatchFlashSale",
                                 request_serializer=selling_pb2.WatchFlashSaleRequest.SerializeToString,
                                 response_deserializer=selling_pb2.FlashSaleCounters.FromString)
    with pytest.raises(fuzzing.grpc.RpcError) as info:
        next(watch(selling_pb2.WatchFlashSaleRequest(sale_id="flash-1", min_interval_ms=2**31 - 1), timeout=5))
    assert info.value.code() is fuzzing.grpc.StatusCode.INVALID_ARGUMENT
    streams = [watch(selling_pb2.WatchFlashSaleRequest(sale_id="flash-1", min_interval_ms=60_000), timeout=30)
               for _ in range(8)]
    for s in streams:
        assert next(s).sale_id == "flash-1"
        s.cancel()
    checker = fuzzing.Checker()
    checker.check_server(channel, workers=8, seconds=5.0)
    live.close()


def _garbage_everywhere(channel) -> dict[str, tuple]:
    """Bytes that are no protobuf message sent to every RPC: each one's code and parsed status."""
    out = {}
    raw = b"\xff\xfe\xfd not a protobuf message \x00"
    for m in fuzzing.rpc_methods():
        ident = {"request_serializer": None, "response_deserializer": None}
        try:
            if m.client_streaming and m.server_streaming:
                list(channel.stream_stream(m.path, **ident)(iter([raw]), timeout=5))
            elif m.client_streaming:
                channel.stream_unary(m.path, **ident)(iter([raw]), timeout=5)
            elif m.server_streaming:
                list(channel.unary_stream(m.path, **ident)(raw, timeout=5))
            else:
                channel.unary_unary(m.path, **ident)(raw, timeout=5)
            out[m.name] = (None, None)
        except fuzzing.grpc.RpcError as exc:
            out[m.name] = (exc.code(), fuzzing.rpc_status.from_call(exc))
    return out


def test_decoding_handlers_answer_undecodable_bytes_with_invalid_argument(tmp_path):
    # grpcio's own decoding answers INTERNAL with no details; grpc_server.servicers.decoding_handlers decodes in
    # the handler and answers INVALID_ARGUMENT with an ErrorInfo
    from concurrent import futures

    from grpc_server.selling import ChannelFeedServicer, FlashSaleServicer
    from grpc_server.server import _Handlers
    from grpc_server.servicers import DiagnosticsServicer, InventoryServicer, RoutingServicer, decoding_handlers
    from grpc_server.stores import StoreServicer
    from pyomni.v1 import (
        diagnostics_pb2_grpc,
        inventory_pb2,
        inventory_pb2_grpc,
        routing_pb2_grpc,
        selling_pb2_grpc,
        stores_pb2_grpc,
    )

    live = fuzzing.live_engine("native", tmp_path)
    eng = live.engine
    server = fuzzing.grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    for add, servicer in [(inventory_pb2_grpc.add_InventoryServiceServicer_to_server, InventoryServicer(eng)),
                          (routing_pb2_grpc.add_RoutingServiceServicer_to_server, RoutingServicer(eng)),
                          (diagnostics_pb2_grpc.add_DiagnosticsServiceServicer_to_server, DiagnosticsServicer()),
                          (selling_pb2_grpc.add_FlashSaleServiceServicer_to_server, FlashSaleServicer(eng)),
                          (selling_pb2_grpc.add_ChannelFeedServiceServicer_to_server, ChannelFeedServicer(eng)),
                          (stores_pb2_grpc.add_StoreServiceServicer_to_server, StoreServicer(eng))]:
        caught = _Handlers()
        add(servicer, caught)
        handlers = decoding_handlers(caught.handlers)
        server.add_generic_rpc_handlers((fuzzing.grpc.method_handlers_generic_handler(caught.service, handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = fuzzing.grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        for name, (code, status) in _garbage_everywhere(channel).items():
            assert code is fuzzing.grpc.StatusCode.INVALID_ARGUMENT, (name, code)
            assert status is not None and fuzzing._status_problem(fuzzing.Outcome(code, status=status)) == "", name
        stock = channel.unary_unary("/pyomni.v1.InventoryService/GetStock",
                                    request_serializer=inventory_pb2.GetStockRequest.SerializeToString,
                                    response_deserializer=lambda b: b)
        assert stock(inventory_pb2.GetStockRequest(location="SH-PEOPLE", sku="SKU-A"), timeout=5)   # still decodes
    finally:
        channel.close()
        server.stop(None)
        live.close()


def test_the_server_answers_undecodable_bytes_with_invalid_argument(tmp_path):
    live = fuzzing.live_engine("native", tmp_path)
    with fuzzing.served(workers=4) as (slot, channel):      # a server of its own: grpcio's decoding failures
        slot.target = live.engine                           # can hold up its shutdown
        codes = {name: code for name, (code, _) in _garbage_everywhere(channel).items()}
    live.close()
    assert set(codes.values()) == {fuzzing.grpc.StatusCode.INVALID_ARGUMENT}, codes

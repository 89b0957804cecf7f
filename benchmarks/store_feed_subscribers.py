"""Subscribers for the store-feed benchmark: one ``WatchStoreOrders`` per store, all in one asyncio loop.

    python benchmarks/store_feed_subscribers.py ADDRESS OUT.json STORE [STORE ...]

Prints ``ready`` once every feed has its first (reset) batch; on a line ``stop`` on stdin (or EOF) it
cancels the feeds and writes every new shipment it received (ROUTED, or RESET of a ROUTED one) as
``[received_at, order_id, shipment_id, location, seq]`` rows (``time.time()``, the router's clock) to OUT.json.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import grpc

from pyomni.v1 import stores_pb2, stores_pb2_grpc


async def main(address: str, out: str, stores: list[str]) -> None:
    received: list[list[object]] = []
    started: set[str] = set()
    all_ready = asyncio.Event()
    async with grpc.aio.insecure_channel(address) as channel:
        stub = stores_pb2_grpc.StoreServiceStub(channel)

        async def follow(store: str) -> None:
            call = stub.WatchStoreOrders(stores_pb2.WatchStoreOrdersRequest(locations=[store], heartbeat_seconds=1.0))
            async for batch in call:
                now = time.time()
                if store not in started:
                    started.add(store)
                    if len(started) == len(stores):
                        all_ready.set()
                for e in batch.events:
                    # a feed from 0 starts with a reset; on a new server the first shipments come in it
                    routed = e.shipment.state == stores_pb2.SHIPMENT_STATE_ROUTED
                    if e.kind == "ROUTED" or (e.kind == "RESET" and routed):
                        received.append([now, e.shipment.order_id, e.shipment.id, e.location, e.seq])

        tasks = [asyncio.create_task(follow(s)) for s in stores]
        await asyncio.wait_for(all_ready.wait(), timeout=120)
        print("ready", flush=True)
        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line or line.strip() == "stop":
                break
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    with open(out, "w") as f:
        json.dump(received, f)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3:]))

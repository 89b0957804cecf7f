"""Command line of pyomni.

``pyomni serve`` runs the gRPC server; ``route``, ``quote``, ``confirm``,
``release``, ``reservation``, ``stock``, ``nearby``, ``sale``, ``store`` (a
store's order feed and shipment steps) and ``settle`` call a running one
(:mod:`pyomni.service_cli`); ``simulate`` and ``sweep`` run peak simulations
(:mod:`pyomni.sim.cli`); ``demo`` routes a burst of demo orders in process:
it builds a demo network (stores in real cities weighted by population,
warehouses at regional hubs), loads demo stock through the bulk event path,
routes orders through the engine (hold, then confirm), and prints what it
decided and how fast, with a progress bar.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import Counter
from collections.abc import Sequence

from rich.console import Console
from rich.progress import track
from rich.table import Table


def _demo(args: argparse.Namespace) -> int:
    import pyomni

    console = Console()
    t0 = time.perf_counter()
    net = pyomni.demo_network(stores=args.stores, warehouses=args.warehouses, skus=args.skus, seed=args.seed)
    events = pyomni.demo_stock(net, seed=args.seed)
    eng = pyomni.Engine(net)
    t1 = time.perf_counter()
    eng.apply_stock_events(events)
    t2 = time.perf_counter()
    stats = eng.stats()
    console.print(f"[bold]network[/] {len(net)} locations in {len(set(net.city))} cities, {len(net.skus):,} SKUs; "
                  f"built in {t1 - t0:.2f} s")
    console.print(f"[bold]stock[/] {events.num_rows:,} events -> {stats['cells']:,} cells in {t2 - t1:.2f} s "
                  f"({events.num_rows / (t2 - t1) / 1e6:.1f} M events/s, {stats['bytes_per_cell']:.1f} bytes/cell)")
    orders = pyomni.demo_orders(net, args.orders, seed=args.seed + 1)
    times = []
    results = []
    for order in track(orders, description="routing", console=console, transient=True):
        s = time.perf_counter_ns()
        a = eng.route_order(order, request_id=f"req-{order.id}")
        times.append(time.perf_counter_ns() - s)
        results.append(a)
        if a.reservation_id is not None:
            eng.confirm(a.reservation_id)
    eng.check_invariants()
    status = Counter(a.status.name for a in results)
    ok = [a for a in results if a.ok]
    table = Table(title=f"{len(orders):,} demo orders routed, held and confirmed")
    for col in ("metric", "value"):
        table.add_column(col)
    table.add_row("allocated", f"{status.get('ALLOCATED', 0):,}")
    table.add_row("unfulfillable", f"{status.get('UNFULFILLABLE', 0):,}")
    table.add_row("split orders", f"{sum(len(a.shipments) > 1 for a in ok):,}")
    if ok:
        dists = sorted(s.distance_km for a in ok for s in a.shipments)
        table.add_row("median distance", f"{statistics.median(dists):.1f} km")
        table.add_row("mean cost / order", f"{statistics.fmean(a.total_cost for a in ok):.2f}")
    times.sort()
    table.add_row("route+hold p50", f"{times[len(times) // 2] / 1e3:.1f} µs")
    table.add_row("route+hold p99", f"{times[int(len(times) * 0.99)] / 1e3:.1f} µs")
    console.print(table)
    if ok:
        a = ok[0]
        console.print(f"first order {a.order_id}: {[(s.location, s.lines) for s in a.shipments]} "
                      f"cost {a.total_cost:.2f}; {a.explanation.considered} locations examined "
                      f"({a.explanation.strategy}); runners-up "
                      f"{[(c.location, round(c.cost, 2)) for c in a.explanation.runners_up]}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pyomni`` command."""
    parser = argparse.ArgumentParser(prog="pyomni", description="pyomni: omnichannel allocation core")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="route demo orders on a demo network of real Chinese cities")
    demo.add_argument("--stores", type=int, default=2000)
    demo.add_argument("--warehouses", type=int, default=8)
    demo.add_argument("--skus", type=int, default=100_000)
    demo.add_argument("--orders", type=int, default=20_000)
    demo.add_argument("--seed", type=int, default=7)
    demo.set_defaults(run=_demo)
    from .journal_cli import add_commands as add_journal_commands  # journal verify | dump | truncate
    from .service_cli import add_commands as add_service_commands  # serve, route, confirm, release, stock ...
    from .service_cli import run_guarded
    from .sim.cli import add_commands as add_sim_commands  # simulate, sweep

    add_service_commands(sub)
    add_journal_commands(sub)
    add_sim_commands(sub)
    args = parser.parse_args(argv)
    return run_guarded(args)


if __name__ == "__main__":
    sys.exit(main())

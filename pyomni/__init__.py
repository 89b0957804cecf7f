"""pyomni: the decision core of omnichannel retail allocation.

Three tiers (see DESIGN.md): ``core/*.pyx`` compiled as ``pyomni._core`` do the
typed work; :mod:`pyomni._core` is the only importer of compiled modules; the
public modules here validate inputs, set defaults and document.

>>> import pyomni
>>> net = pyomni.demo_network(stores=30, warehouses=2, skus=50, seed=7)
>>> eng = pyomni.Engine(net)
>>> eng.apply_stock_events(pyomni.demo_stock(net, seed=7)) > 0
True
"""

from . import errors
from .demo import demo_network, demo_orders, demo_stock
from .engine import Engine, config, set_config
from .flash import Claim, ClaimResults, FlashSale, SaleCounters, SaleState, StoreCounters
from .model import (
    MAX_EXCLUDED,
    MAX_LINES,
    MAX_QTY,
    Allocation,
    AllocationStatus,
    Candidate,
    Capability,
    CostBreakdown,
    Explanation,
    Fulfilment,
    Line,
    Location,
    LocationKind,
    NearbyStock,
    Order,
    PickupOption,
    Reservation,
    ReservationState,
    Shipment,
    ShortLine,
    StockLevel,
)
from .network import Network
from .policy import DEFAULT_POLICY, ChannelRule, RoutingPolicy

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    # the gRPC client is imported on first use: in-process users do not pay for grpcio
    if name == "Client":
        from .client import Client

        return Client
    raise AttributeError(f"module 'pyomni' has no attribute {name!r}")


__all__ = [
    "errors",
    "Engine",
    "Client",
    "Network",
    "RoutingPolicy",
    "DEFAULT_POLICY",
    "ChannelRule",
    "FlashSale",
    "SaleState",
    "SaleCounters",
    "StoreCounters",
    "Claim",
    "ClaimResults",
    "config",
    "set_config",
    "demo_network",
    "demo_stock",
    "demo_orders",
    "MAX_EXCLUDED",
    "MAX_LINES",
    "MAX_QTY",
    "Allocation",
    "AllocationStatus",
    "Candidate",
    "Capability",
    "CostBreakdown",
    "Explanation",
    "Fulfilment",
    "Line",
    "Location",
    "LocationKind",
    "NearbyStock",
    "Order",
    "PickupOption",
    "Reservation",
    "ReservationState",
    "Shipment",
    "ShortLine",
    "StockLevel",
]

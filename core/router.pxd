# The routing decision (declarations). See router.pyx for the algorithm.

from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t
from pyomni._core.ledger cimport Ledger
from pyomni._core.geo cimport LocationIndex, KdNode
from pyomni._core.status cimport Status
cimport cython

cdef enum:
    MAX_LINES = 64          # lines per order (pyomni.model.MAX_LINES)
    MAX_SHIPMENTS = 16      # shipments per order (max_splits is capped here)
    N_KEEP = 4              # single-location candidates kept: the winner + 3 runners-up
    SCAN_LIMIT = 256        # SKU lists shorter than this are scanned instead of searched

cdef enum Reject:
    REJ_CLOSED = 0
    REJ_EXCLUDED = 1
    REJ_CAPABILITY = 2
    REJ_CAPACITY = 3
    REJ_DISTANCE = 4
    REJ_NO_STOCK = 5
    N_REJECT = 6

ctypedef struct Query:
    double dest[3]
    int32_t pickup_loc              # -1 unless click-and-collect
    uint8_t need_cap                # capability bits needed (the pickup store itself is exempt)
    double max_km
    int n_lines
    int32_t sku[MAX_LINES]
    int32_t qty[MAX_LINES]
    int check_order[MAX_LINES]      # lines by ascending SKU cell count: the rarest fails fastest
    uint32_t excl_gen               # a location is excluded when Router.excl_mark[loc] == excl_gen
    int max_shipments
    double split_cap                # a split shipment's base cost + min_fixed + split_penalty must stay below

ctypedef struct Costs:              # one shipment's cost parts, summed in this order
    double fixed
    double distance
    double low_stock
    double load
    double priority
    double total

ctypedef struct Singles:            # cheapest single locations filling everything, sorted
    int n
    int32_t loc[N_KEEP]
    double km[N_KEEP]
    Costs cost[N_KEEP]

ctypedef struct Plan:
    int n_ship
    int32_t loc[MAX_SHIPMENTS]
    double km[MAX_SHIPMENTS]
    Costs cost[MAX_SHIPMENTS]
    int32_t take[MAX_SHIPMENTS][MAX_LINES]
    int32_t remaining[MAX_LINES]
    double total

ctypedef struct Stats:
    int considered
    int rejected[N_REJECT]
    int strategy                    # 0 spatial, 1 sku_scan (of the single-location search)


ctypedef struct PolicyC:
    double cost_per_km
    double circuity
    double split_penalty
    double low_stock_weight
    double load_weight
    double priority_weight
    double per_km                   # cost_per_km * circuity, computed once


cdef class NativePolicy:
    cdef PolicyC p


# final: cdef methods are called directly (no vtable), so the C compiler can inline them
@cython.final
cdef class Router:
    cdef Ledger ledger
    cdef LocationIndex index
    cdef readonly int32_t n
    cdef double* xyz
    cdef uint8_t* caps
    cdef uint8_t* is_open
    cdef int32_t* capacity
    cdef int32_t* priority
    cdef double* fixed_cost
    cdef double min_fixed
    cdef double* node_min_fixed     # per k-d node: cheapest fixed cost below it
    cdef int32_t* node_min_priority # per k-d node: best (lowest) priority below it
    cdef uint32_t* stamp
    cdef uint32_t stamp_gen
    cdef uint32_t* excl_mark        # per location: the generation of the query that excludes it
    cdef uint32_t excl_gen

    cdef int _gate(self, const Query* q, int32_t loc, double km) noexcept nogil
    cdef void _costs(self, const PolicyC* pol, int32_t loc, double km, double low_sum, bint extra, Costs* out) noexcept nogil
    cdef double _base(self, const PolicyC* pol, int32_t loc, double km, bint extra) noexcept nogil
    cdef double _node_lb(self, const PolicyC* pol, const Query* q, int node_id, bint extra, double* km_lb) noexcept nogil
    cdef void _consider_single(self, const PolicyC* pol, const Query* q, int32_t loc, Singles* best, Stats* st) noexcept nogil
    cdef void _search_single(self, const PolicyC* pol, const Query* q, Singles* best, Stats* st) noexcept nogil
    cdef void _push_children(self, const Query* q, const KdNode* node, int* stack, int* top) noexcept nogil
    cdef void _consider_step(self, const PolicyC* pol, const Query* q, int32_t loc, Plan* plan, int64_t rem_units, double* best_ratio, int32_t* best_loc, double* best_km, Costs* best_cost, int32_t* best_take) noexcept nogil
    cdef bint _split_step(self, const PolicyC* pol, const Query* q, Plan* plan) noexcept nogil
    cdef void _split(self, const PolicyC* pol, const Query* q, Plan* plan) noexcept nogil
    cdef Status _hold_plan(self, const Query* q, const Plan* plan, int64_t* cells) noexcept nogil
    cdef int _route_one(self, const PolicyC* pol, Query* q, bint hold, Singles* best, Plan* plan, Stats* st,
                        int64_t* cells, int* split_reason) noexcept nogil
    cdef void _offer(self, const Query* q, int32_t loc, int need_cap, double radius_c2, int k, int* n_found, double* best_c2, int32_t* best_loc) noexcept nogil

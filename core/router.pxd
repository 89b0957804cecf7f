# The routing decision (declarations). See router.pyx for the algorithm.

from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t
from pyomni._core.ledger cimport Ledger
from pyomni._core.geo cimport LocationIndex, KdNode
from pyomni._core.status cimport Status
cimport cython

cdef enum:
    MAX_LINES = 64          # lines per order (pyomni.model.MAX_LINES)
    MAX_SHIPMENTS = 16      # shipments per order (max_splits is capped here)
    N_KEEP = 4              # single-location candidates kept: the winner + 3 runners-up
    SCAN_LIMIT = 48         # SKU lists this short are scanned; longer ones get a tree
    TREE_LEAF = 16          # cells per leaf of a SKU's tree
    EXACT_LINES = 6         # orders up to this many lines get the exact plan search
    N_GROUPS = 64           # 2 ** EXACT_LINES subsets of lines

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
    double single_cap               # a single location dearer than this is of no interest (INF: none)
    bint base_only                  # price without the stock-dependent part, needing qty units (lower bounds)
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

ctypedef struct Group:              # the cheapest single location for a subset of an order's lines
    int32_t loc                     # -1: none (at or under the search's cap)
    double km
    Costs first                     # priced as the order's first parcel
    Costs later                     # priced as a later one (the split penalty added)

ctypedef struct Exact:              # the exact plan search over partitions of the lines
    Group g[N_GROUPS]               # by mask of lines
    int n                           # groups in the best partition (0: none found)
    int mask[MAX_SHIPMENTS]
    double total
    double next_total               # the cheapest other partition priced (INF: none)

ctypedef struct Outcome:            # what a decision proves about itself
    bint optimal                    # the cheapest plan keeping each line whole (see the module docstring)
    double next_best                # the cheapest other plan priced, INF if none
    double lower_bound              # no plan costs less (the plan's own cost when optimal)

ctypedef struct Stats:
    int considered
    int rejected[N_REJECT]
    int strategy                    # 0 spatial, 1 sku_scan (of the single-location search)


ctypedef struct LocInfo:            # what a search reads about a location, in one cache line
    double xyz[3]                   # unit vector
    double fixed_cost
    double static_key               # static cost in chord units (shapes the SKU trees)
    int32_t priority
    int32_t capacity                # daily, 0 = unlimited
    uint32_t excl_mark              # the generation of the query that excludes it
    uint8_t caps
    uint8_t is_open
    uint8_t _pad[10]

ctypedef struct TNode:              # a node of a SKU's tree: a box of its cells' locations and their cheapest static costs
    double lo[3]
    double hi[3]
    double min_fixed
    int32_t min_priority
    int32_t start                   # entries [start, end) of the tree's arrays
    int32_t end
    int32_t left                    # child node ids, -1 for a leaf
    int32_t right
    int32_t parent                  # -1 for the root
    int32_t max_avail               # no cell below has more available (a bound: it may be stale high)

ctypedef struct SkuTree:            # the cells of one SKU in a k-d tree over (location, static cost)
    int32_t n                       # cells in the tree; 0 = not built
    int32_t head                    # the SKU's newest cell at build time: cells listed before it are newer
    int32_t n_nodes
    uint64_t drops                  # Ledger.drops at build time (a dropped cell may have been reused)
    bint stale                      # the max_avail bounds must be recomputed (too many raises to follow)
    int32_t* cell                   # n entries in tree order
    int32_t* loc
    TNode* nodes


ctypedef struct PolicyC:
    double cost_per_km
    double circuity
    double split_penalty
    double low_stock_weight
    double load_weight
    double priority_weight
    double per_km                   # cost_per_km * circuity, computed once
    bint fewest_first               # fewest shipments first, then the cheapest (else the cheapest)
    bint exact_plans                # the exact plan search (else the single or the greedy split)


cdef class NativePolicy:
    cdef PolicyC p


# final: cdef methods are called directly (no vtable), so the C compiler can inline them
@cython.final
cdef class Router:
    cdef Ledger ledger
    cdef LocationIndex index
    cdef readonly int32_t n
    cdef LocInfo* info              # per location, one cache line each
    cdef double min_fixed
    cdef uint32_t* stamp
    cdef uint32_t stamp_gen
    cdef uint32_t excl_gen
    cdef SkuTree* trees             # per SKU, built on first use when the SKU has > SCAN_LIMIT cells
    cdef int32_t n_trees
    cdef readonly int64_t tree_bytes
    cdef int32_t* leaf_of           # per cell: its leaf in its SKU's tree, -1 if none (checked before use)
    cdef int64_t n_leaf_of
    cdef double floor_cache[MAX_LINES]  # per line of the decision in hand: _line_floor, -1 until searched
    cdef double* node_min_fixed     # per node of the location tree: cheapest fixed cost below it
    cdef int32_t* node_min_priority # per node of the location tree: best (lowest) priority below it

    cdef SkuTree* _tree_for(self, int32_t sku) noexcept nogil
    cdef void _drain_raises(self) noexcept nogil
    cdef void _refresh_max(self, SkuTree* t) noexcept nogil
    cdef bint _build_tree(self, SkuTree* t, int32_t sku) noexcept nogil
    cdef int32_t _build_node(self, SkuTree* t, int32_t start, int32_t end) noexcept nogil
    cdef double _tree_key(self, int32_t loc, int axis) noexcept nogil
    cdef double _tnode_lb(self, const PolicyC* pol, const Query* q, const TNode* node, bint extra,
                          double* km_lb) noexcept nogil

    cdef int _gate(self, const Query* q, int32_t loc, double km) noexcept nogil
    cdef void _costs(self, const PolicyC* pol, int32_t loc, double km, double low_sum, bint extra, Costs* out) noexcept nogil
    cdef double _base(self, const PolicyC* pol, int32_t loc, double km, bint extra) noexcept nogil
    cdef void _consider_single(self, const PolicyC* pol, const Query* q, int32_t loc, int64_t c0, Singles* best, Stats* st) noexcept nogil
    cdef void _search_single(self, const PolicyC* pol, const Query* q, Singles* best, Stats* st) noexcept nogil
    cdef void _push_tree_children(self, const PolicyC* pol, const Query* q, const SkuTree* t, const TNode* node, bint extra, int* stack, int* top) noexcept nogil
    cdef void _push_children(self, const Query* q, const KdNode* node, int* stack, int* top) noexcept nogil
    cdef void _consider_step(self, const PolicyC* pol, const Query* q, int32_t loc, int known_line, int64_t known_cell, Plan* plan, int64_t rem_units, double* best_ratio, int32_t* best_loc, double* best_km, Costs* best_cost, int32_t* best_take) noexcept nogil
    cdef void _prefetch_leaf(self, const PolicyC* pol, const Query* q, const SkuTree* t, const TNode* node, int known_line, const int32_t* remaining, double bound) noexcept nogil
    cdef bint _split_step(self, const PolicyC* pol, const Query* q, Plan* plan) noexcept nogil
    cdef void _split(self, const PolicyC* pol, const Query* q, Plan* plan) noexcept nogil
    cdef Status _hold_plan(self, const Query* q, const Plan* plan, int64_t* cells) noexcept nogil
    cdef void _group(self, const PolicyC* pol, const Query* q, int mask, double cap, Group* out, Stats* st) noexcept nogil
    cdef void _set_group(self, const PolicyC* pol, const Singles* b, double cap, Group* out) noexcept nogil
    cdef void _partitions(self, const PolicyC* pol, const Query* q, Exact* ex) noexcept nogil
    cdef void _partition_from(self, const PolicyC* pol, Exact* ex, int n, int k, int i, int m, int* masks) noexcept nogil
    cdef double _line_floor(self, const PolicyC* pol, const Query* q, int i, Stats* st) noexcept nogil
    cdef double _line_bound(self, const PolicyC* pol, const Query* q, Stats* st) noexcept nogil
    cdef int _route_one(self, const PolicyC* pol, Query* q, bint hold, Singles* best, Plan* plan, Stats* st,
                        int64_t* cells, int* split_reason, Outcome* out) noexcept nogil
    cdef double _two_parcels_bound(self, const PolicyC* pol, const Query* q, double* cheapest) noexcept nogil
    cdef double _unit_split_bound(self, const PolicyC* pol, const Query* q, Stats* st) noexcept nogil
    cdef int _greedy_only(self, const PolicyC* pol, Query* q, Plan* plan, double split_cap, int* split_reason,
                          Outcome* out, Stats* st, int64_t* cells, bint hold) noexcept nogil
    cdef void _take_single(self, const Query* q, const Singles* best, Plan* plan) noexcept nogil
    cdef int _finish(self, const Query* q, bint hold, const Plan* plan, int64_t* cells) noexcept nogil
    cdef void _offer(self, const Query* q, int32_t loc, int need_cap, double radius_c2, int k, int* n_found, double* best_c2, int32_t* best_loc) noexcept nogil

# cython: language_level=3
"""The routing decision: which location(s) fulfil an order, at what cost.

Definitions (the plain-Python reference in ``pyomni/reference.py`` computes the
same thing by brute force, and parity tests hold the two to identical answers):

* A location is *eligible* if it is open, not excluded, has the capability the
  order needs (the pickup store itself is exempt), has daily capacity left
  (held + confirmed-today shipments < capacity, 0 = unlimited), and lies within
  ``max_km`` of the destination.
* The cost of a shipment from ``l`` carrying ``t_i`` units of line ``i`` is, in
  this order: ``fixed_cost[l]`` (+ ``split_penalty`` if it is not the first
  shipment) + ``per_km * km`` + ``low_stock_weight * sum(t_i / available_i)``
  + ``load_weight * load[l] / capacity[l]`` + ``priority_weight * priority[l]``.
* *Single*: the eligible location that can fill every line by itself at the
  least cost (ties: lower location index). Runners-up are the next cheapest
  such locations *among those the search examined*: the search prunes against
  the winner, so it does not spend time proving who came second.
* *Group* ``g`` (a subset of the lines): the single location for those lines
  alone, priced as a first parcel and, with the penalty, as a later one.
* *Exact plan* (orders of 2 to EXACT_LINES lines that may split, unless the
  policy turns it off): over every partition of the lines into at most
  ``max_shipments`` groups whose locations are distinct, each group at its own
  cheapest location, the one of least total (ties: fewer parcels, then the
  first partition in enumeration order -- restricted growth strings, line ``i``
  joining each open group in turn, then opening the next); with
  ``fewest_first``, the fewest parcels, then the least total. The groups are
  listed in order of their first line; the first parcel pays no penalty; the
  total is summed from the last parcel to the first. This is the cheapest plan
  that sends each line whole from one location (a location used twice would be
  one parcel cheaper as a merged group, which is a partition too).
* *Greedy split*: at most ``max_shipments`` steps: each step takes the unused
  eligible location with the least cost per unit it can cover of what remains
  (ties: lower index) and covers ``min(available, remaining)`` of each line;
  only locations with ``base + min_fixed + split_penalty < split_cap`` take part
  (``base`` = the cost without the low-stock term: a plan of two or more
  shipments using such a location cannot cost less than the cap). It is the
  only way when a line cannot leave whole from any one location, and it
  replaces the exact plan when it splits a line's units and costs less (by more
  than 1e-9): the exact plan is never dearer than the greedy one.
* The answer, without the exact search (one line, more lines than
  EXACT_LINES, ``exact_plans`` off, no splits): the single, unless the greedy
  split (cap: the single's cost) covers everything with more than one shipment
  at a strictly lower total cost. With it: the exact plan (or the greedy split
  as above). The search proves it cheaply for most orders: a single location
  that costs less than the two cheapest eligible locations without their
  stock-dependent parts plus a penalty (less 1e-9) beats every plan of two
  parcels or more.
* ``split_reason`` of a plan of several parcels: ``CHEAPER`` if a single
  location could fill the order for no more than a parcel per line costs (the
  cap of that search, when such a plan exists), else ``NO_SINGLE_LOCATION``.
  ``optimal``: the answer is a single location no split can beat, or the exact
  plan. ``lower_bound``: the plan's cost when optimal, else the dearest over
  the lines of the cheapest parcel holding a unit of it.

Every search walks the tree of the rarest line's SKU (or scans its cells when
there are at most SCAN_LIMIT): a k-d tree over the SKU's cells split on
location and on static cost (fixed cost and priority), cheapest-looking child
first, skipping a subtree when the cheapest cost anything in it could have
(cheapest fixed cost and priority below it + distance to its box) cannot beat
what is already found or exceeds the search's cap. The exact search prices the
groups with caps derived from the best plan known (a group that is one of
several parcels leaves at least the cheapest eligible location's cost without
its stock-dependent part, plus a penalty, to pay), and the
greedy split only runs when it could win: a greedy plan that splits a line's
units sends it from two holders of it, one taking all it has, so it costs at
least ``2 * cheapest holder + split_penalty + low_stock_weight``.
"""

import numpy as np

from libc.stdlib cimport malloc, realloc, free
from libc.string cimport memset, memcpy
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t
from pyomni._core.status cimport *
from pyomni._core.router cimport *
from pyomni._core.ledger cimport Ledger, Cell, cell_available
from pyomni._core.geo cimport (LocationIndex, KdNode, KD_STACK, unit_vector, chord_sq, chord_sq_to_km,
                               chord_sq_to_km_lb, box_chord_sq, sin)

cdef double INF = 1e300
cdef extern from *:
    void __builtin_prefetch(const void* addr) nogil
cdef extern from "<stdlib.h>" nogil:
    int posix_memalign(void** out, size_t alignment, size_t size)
# Prune only when a bound exceeds the best by more than rounding could explain,
# so a pruned location can never tie or win.
cdef double EPS = 1e-9
# chord length of one unit of static cost under the default policy (0.03 a km x 1.3 circuity)
cdef double STATIC_CHORD_PER_COST = 1.0 / (0.039 * 6371.0088)

REJECT_NAMES = ("CLOSED", "EXCLUDED", "CAPABILITY", "CAPACITY", "DISTANCE", "NO_STOCK")
MAX_LINES_ = MAX_LINES
MAX_SHIPMENTS_ = MAX_SHIPMENTS


cdef class NativePolicy:
    """A routing policy's weights in native form (built once per policy)."""

    def __cinit__(self, double cost_per_km, double circuity, double split_penalty,
                  double low_stock_weight, double load_weight, double priority_weight, bint fewest_first=False,
                  bint exact_plans=True):
        self.p.cost_per_km = cost_per_km
        self.p.circuity = circuity
        self.p.split_penalty = split_penalty
        self.p.low_stock_weight = low_stock_weight
        self.p.load_weight = load_weight
        self.p.priority_weight = priority_weight
        self.p.per_km = cost_per_km * circuity
        self.p.fewest_first = fewest_first
        self.p.exact_plans = exact_plans

    def __reduce__(self):
        return (NativePolicy, (self.p.cost_per_km, self.p.circuity, self.p.split_penalty,
                               self.p.low_stock_weight, self.p.load_weight, self.p.priority_weight,
                               self.p.fewest_first, self.p.exact_plans))


cdef inline bint _before(double cost_a, int32_t loc_a, double cost_b, int32_t loc_b) noexcept nogil:
    return cost_a < cost_b or (cost_a == cost_b and loc_a < loc_b)


cdef inline void _push_pair(int* stack, int* top, int a, double key_a, int b, double key_b) noexcept nogil:
    # push two nodes so the one of the smaller key (ties: a) is popped first
    if key_a <= key_b:
        stack[top[0]] = b
        stack[top[0] + 1] = a
    else:
        stack[top[0]] = a
        stack[top[0] + 1] = b
    top[0] += 2


cdef void _order_by_rarity(Query* q, const int32_t* sku_count) noexcept nogil:
    # insertion sort of line indices by the SKU's number of cells (orders are short)
    cdef int i, j, t
    for i in range(q.n_lines):
        q.check_order[i] = i
    for i in range(1, q.n_lines):
        t = q.check_order[i]
        j = i
        while j > 0 and sku_count[q.sku[q.check_order[j - 1]]] > sku_count[q.sku[t]]:
            q.check_order[j] = q.check_order[j - 1]
            j -= 1
        q.check_order[j] = t


cdef class Router:
    """Routing over one network's locations and one ledger.

    Parameters
    ----------
    ledger : Ledger
    index : LocationIndex
        Built from the same ``xyz``.
    xyz : float64 (n, 3)
        Location unit vectors.
    caps, is_open : uint8 (n,)
    capacity, priority : int32 (n,)
    fixed_cost : float64 (n,)
    """

    def __cinit__(self, Ledger ledger, LocationIndex index, const double[:, ::1] xyz, const uint8_t[::1] caps,
                  const uint8_t[::1] is_open, const int32_t[::1] capacity, const int32_t[::1] priority,
                  const double[::1] fixed_cost):
        cdef int32_t n = xyz.shape[0], i
        if (index.n != n or ledger.n_locations != n or caps.shape[0] != n or is_open.shape[0] != n
                or capacity.shape[0] != n or priority.shape[0] != n or fixed_cost.shape[0] != n):
            raise ValueError("location arrays must all have the ledger's length")
        self.ledger = ledger
        self.index = index
        self.n = n
        cdef int32_t m = max(n, 1)
        # one cache line per location: everything a search reads about it
        if posix_memalign(<void**> &self.info, 64, m * sizeof(LocInfo)) != 0:
            self.info = NULL
            raise MemoryError()
        memset(self.info, 0, m * sizeof(LocInfo))
        self.stamp = <uint32_t*> malloc(m * sizeof(uint32_t))
        if self.stamp == NULL:
            raise MemoryError()
        self.min_fixed = INF if n else 0.0
        for i in range(n):
            self.info[i].xyz[0] = xyz[i, 0]
            self.info[i].xyz[1] = xyz[i, 1]
            self.info[i].xyz[2] = xyz[i, 2]
            self.info[i].caps = caps[i]
            self.info[i].is_open = is_open[i]
            self.info[i].capacity = capacity[i]
            self.info[i].priority = priority[i]
            self.info[i].fixed_cost = fixed_cost[i]
            if fixed_cost[i] < self.min_fixed:
                self.min_fixed = fixed_cost[i]
        memset(self.stamp, 0, m * sizeof(uint32_t))
        self.stamp_gen = 0
        self.excl_gen = 0
        # the SKU trees split on static cost as well as on place, so a subtree of dear locations is
        # pruned even in a dense city; the scale (the default policy's cost of a km) only shapes the tree
        for i in range(n):
            self.info[i].static_key = (self.info[i].fixed_cost + self.info[i].priority) * STATIC_CHORD_PER_COST
        self.trees = NULL
        self.n_trees = 0
        self.tree_bytes = 0
        self.leaf_of = NULL
        self.n_leaf_of = 0
        ledger.n_raised = 0             # raises before the trees exist are already in them when built
        ledger.raise_overflow = False
        # per node of the location tree: the cheapest fixed cost and best priority below it (the two cheapest
        # eligible locations bound what any plan of two parcels or more can cost)
        cdef int nn = max(index.n_nodes, 1), node_id, j
        self.node_min_fixed = <double*> malloc(nn * sizeof(double))
        self.node_min_priority = <int32_t*> malloc(nn * sizeof(int32_t))
        if self.node_min_fixed == NULL or self.node_min_priority == NULL:
            raise MemoryError()
        for node_id in range(index.n_nodes):
            self.node_min_fixed[node_id] = INF
            self.node_min_priority[node_id] = 2147483647
            for j in range(index.nodes[node_id].start, index.nodes[node_id].end):
                i = index.perm[j]
                if self.info[i].fixed_cost < self.node_min_fixed[node_id]:
                    self.node_min_fixed[node_id] = self.info[i].fixed_cost
                if self.info[i].priority < self.node_min_priority[node_id]:
                    self.node_min_priority[node_id] = self.info[i].priority

    def __dealloc__(self):
        free(self.stamp)
        free(self.info)
        free(self.node_min_fixed)
        free(self.node_min_priority)
        cdef int32_t k
        for k in range(self.n_trees):
            free(self.trees[k].cell)
            free(self.trees[k].loc)
            free(self.trees[k].nodes)
        free(self.trees)
        free(self.leaf_of)

    def set_open(self, int32_t loc, bint is_open):
        """Open or close a location for routing."""
        self.info[loc].is_open = is_open

    def set_capacity(self, int32_t loc, int32_t capacity):
        """Change a location's daily capacity (0 = unlimited)."""
        self.info[loc].capacity = capacity

    # -- the SKU trees -------------------------------------------------------------
    cdef SkuTree* _tree_for(self, int32_t sku) noexcept nogil:
        # The tree of a SKU's cells, (re)built if it is missing or stale; NULL if it cannot be built (the
        # caller scans the SKU's list instead). Cells added since the build are the overflow: they are
        # listed before ``head`` and the search scans them; past a quarter of the tree the tree is rebuilt.
        cdef int32_t cap, k, count = self.ledger.sku_count[sku]
        cdef SkuTree* grown
        cdef SkuTree* t
        if sku >= self.n_trees:
            cap = max(self.ledger.n_skus, sku + 1)
            grown = <SkuTree*> realloc(self.trees, cap * sizeof(SkuTree))
            if grown == NULL:
                return NULL
            memset(&grown[self.n_trees], 0, (cap - self.n_trees) * sizeof(SkuTree))
            self.trees = grown
            self.n_trees = cap
        t = &self.trees[sku]
        if t.n > 0 and t.drops == self.ledger.drops and count - t.n <= max(32, t.n // 4):
            if t.stale:
                self._refresh_max(t)
            return t
        if not self._build_tree(t, sku):
            return NULL
        return t

    cdef bint _build_tree(self, SkuTree* t, int32_t sku) noexcept nogil:
        cdef int32_t m = self.ledger.sku_count[sku], c
        cdef int64_t k = 0
        cdef int32_t* grown_leaf
        cdef int64_t cap_nodes = 4 * (<int64_t> m) // TREE_LEAF + 4
        self.tree_bytes -= (<int64_t> t.n) * 8 + (<int64_t> t.n_nodes) * sizeof(TNode)
        free(t.cell)
        free(t.loc)
        free(t.nodes)
        memset(t, 0, sizeof(SkuTree))
        if m <= 0:
            return False
        if self.n_leaf_of < self.ledger.n_cells:
            grown_leaf = <int32_t*> realloc(self.leaf_of, self.ledger.n_cells * sizeof(int32_t))
            if grown_leaf == NULL:
                return False
            for k in range(self.n_leaf_of, self.ledger.n_cells):
                grown_leaf[k] = -1
            self.leaf_of = grown_leaf
            self.n_leaf_of = self.ledger.n_cells
            k = 0
        t.cell = <int32_t*> malloc(m * sizeof(int32_t))
        t.loc = <int32_t*> malloc(m * sizeof(int32_t))
        t.nodes = <TNode*> malloc(cap_nodes * sizeof(TNode))
        if t.cell == NULL or t.loc == NULL or t.nodes == NULL:
            free(t.cell)
            free(t.loc)
            free(t.nodes)
            memset(t, 0, sizeof(SkuTree))
            return False
        c = self.ledger.sku_head[sku]
        while c >= 0:
            t.cell[k] = c
            t.loc[k] = self.ledger.cells[c].loc
            k += 1
            c = self.ledger.cells[c].next
        self._build_node(t, 0, m)
        t.n = m
        t.head = self.ledger.sku_head[sku]
        t.drops = self.ledger.drops
        self.tree_bytes += (<int64_t> t.n) * 8 + (<int64_t> t.n_nodes) * sizeof(TNode)
        return True

    cdef int32_t _build_node(self, SkuTree* t, int32_t start, int32_t end) noexcept nogil:
        # A median split on the widest of x, y, z and static cost (recursion depth ~ log2 of the cells).
        cdef int32_t node_id = t.n_nodes, i, j, lo, hi, mid, kth, tmp, left, right, loc, av
        cdef int axis, a
        cdef double pivot, v, s_lo = INF, s_hi = -INF, spread
        cdef TNode* node = &t.nodes[node_id]
        t.n_nodes += 1
        for a in range(3):
            node.lo[a] = INF
            node.hi[a] = -INF
        node.min_fixed = INF
        node.min_priority = 2147483647
        for i in range(start, end):
            loc = t.loc[i]
            for a in range(3):
                v = self.info[loc].xyz[a]
                if v < node.lo[a]:
                    node.lo[a] = v
                if v > node.hi[a]:
                    node.hi[a] = v
            if self.info[loc].fixed_cost < node.min_fixed:
                node.min_fixed = self.info[loc].fixed_cost
            if self.info[loc].priority < node.min_priority:
                node.min_priority = self.info[loc].priority
            v = self.info[loc].static_key
            if v < s_lo:
                s_lo = v
            if v > s_hi:
                s_hi = v
        node.start = start
        node.end = end
        node.left = -1
        node.right = -1
        node.parent = -1
        node.max_avail = 0
        if end - start <= TREE_LEAF:
            for i in range(start, end):
                self.leaf_of[t.cell[i]] = node_id
                av = cell_available(&self.ledger.cells[t.cell[i]])
                if av > node.max_avail:
                    node.max_avail = av
            return node_id
        axis = 3
        spread = s_hi - s_lo
        for a in range(3):
            if node.hi[a] - node.lo[a] > spread:
                spread = node.hi[a] - node.lo[a]
                axis = a
        # Hoare quickselect of the median on the axis, moving cell and loc together
        mid = (start + end) // 2
        lo = start
        hi = end - 1
        while lo < hi:
            pivot = self._tree_key(t.loc[(lo + hi) // 2], axis)
            i = lo
            j = hi
            while i <= j:
                while self._tree_key(t.loc[i], axis) < pivot:
                    i += 1
                while self._tree_key(t.loc[j], axis) > pivot:
                    j -= 1
                if i <= j:
                    tmp = t.loc[i]
                    t.loc[i] = t.loc[j]
                    t.loc[j] = tmp
                    tmp = t.cell[i]
                    t.cell[i] = t.cell[j]
                    t.cell[j] = tmp
                    i += 1
                    j -= 1
            if mid <= j:
                hi = j
            elif mid >= i:
                lo = i
            else:
                break
        left = self._build_node(t, start, mid)
        right = self._build_node(t, mid, end)
        t.nodes[node_id].left = left
        t.nodes[node_id].right = right
        t.nodes[left].parent = node_id
        t.nodes[right].parent = node_id
        t.nodes[node_id].max_avail = max(t.nodes[left].max_avail, t.nodes[right].max_avail)
        return node_id

    cdef void _prefetch_leaf(self, const PolicyC* pol, const Query* q, const SkuTree* t, const TNode* node,
                             int known_line, const int32_t* remaining, double bound) noexcept nogil:
        # Overlap a leaf's cache misses before reading any of them: the cells of the entries that could still
        # cost at most ``bound`` (their place and static cost alone say so, from small per-location arrays),
        # then the hash slots of their other lines (those with units remaining, when ``remaining`` is given),
        # then the cells those point at.
        cdef int j, i, n = 0
        cdef int32_t loc
        cdef int32_t keep[TREE_LEAF]
        for j in range(node.start, node.end):
            loc = t.loc[j]
            if self._base(pol, loc, chord_sq_to_km_lb(chord_sq(self.info[loc].xyz, q.dest)), False) <= bound + EPS:
                __builtin_prefetch(&self.ledger.cells[t.cell[j]])
                keep[n] = loc
                n += 1
        if q.n_lines == 1:
            return
        for j in range(n):
            for i in range(q.n_lines):
                if i != known_line and (remaining == NULL or remaining[i] > 0):
                    self.ledger.prefetch(keep[j], q.sku[i])
        for j in range(n):
            for i in range(q.n_lines):
                if i != known_line and (remaining == NULL or remaining[i] > 0):
                    self.ledger.prefetch_cell(keep[j], q.sku[i])

    cdef double _tree_key(self, int32_t loc, int axis) noexcept nogil:
        return self.info[loc].static_key if axis == 3 else self.info[loc].xyz[axis]

    cdef double _tnode_lb(self, const PolicyC* pol, const Query* q, const TNode* node, bint extra,
                          double* km_lb) noexcept nogil:
        # the cheapest cost any cell's location below the node could have (its stock-dependent part >= 0)
        cdef double d = 0.0, t
        cdef int k
        for k in range(3):
            if q.dest[k] < node.lo[k]:
                t = node.lo[k] - q.dest[k]
                d += t * t
            elif q.dest[k] > node.hi[k]:
                t = q.dest[k] - node.hi[k]
                d += t * t
        km_lb[0] = chord_sq_to_km_lb(d)
        return (node.min_fixed + (pol.split_penalty if extra else 0.0) + pol.per_km * km_lb[0]
                + pol.priority_weight * node.min_priority)


    cdef void _drain_raises(self) noexcept nogil:
        # Follow the ledger's raises into the trees' max_avail bounds: each raised cell lifts its leaf and the
        # ancestors below the new value. Falls are left alone (a bound stale high is still a bound). A cell the
        # tree does not hold (newer than the tree, or of a tree being rebuilt) is skipped: searches scan those.
        cdef int32_t i, j, c, node_id, a, sku
        cdef SkuTree* t
        cdef TNode* node
        cdef bint found
        if self.ledger.raise_overflow:
            for sku in range(self.n_trees):
                if self.trees[sku].n > 0:
                    self.trees[sku].stale = True
        else:
            for i in range(self.ledger.n_raised):
                c = self.ledger.raise_log[i]
                if c >= self.n_leaf_of or c >= self.ledger.n_cells:
                    continue
                sku = self.ledger.cells[c].sku
                if sku >= self.n_trees:
                    continue
                t = &self.trees[sku]
                node_id = self.leaf_of[c]
                if t.n == 0 or t.stale or t.drops != self.ledger.drops or node_id < 0 or node_id >= t.n_nodes:
                    continue
                node = &t.nodes[node_id]
                found = False
                if node.left < 0:
                    for j in range(node.start, node.end):
                        if t.cell[j] == c:
                            found = True
                            break
                if not found:
                    continue
                a = cell_available(&self.ledger.cells[c])
                while node_id >= 0 and t.nodes[node_id].max_avail < a:
                    t.nodes[node_id].max_avail = a
                    node_id = t.nodes[node_id].parent
        self.ledger.n_raised = 0
        self.ledger.raise_overflow = False

    cdef void _refresh_max(self, SkuTree* t) noexcept nogil:
        # every max_avail recomputed: leaves from their cells, then each parent (ids grow down the tree)
        cdef int32_t node_id, j, a
        cdef TNode* node
        node_id = t.n_nodes - 1
        while node_id >= 0:
            node = &t.nodes[node_id]
            if node.left < 0:
                node.max_avail = 0
                for j in range(node.start, node.end):
                    a = cell_available(&self.ledger.cells[t.cell[j]])
                    if a > node.max_avail:
                        node.max_avail = a
            else:
                node.max_avail = max(t.nodes[node.left].max_avail, t.nodes[node.right].max_avail)
            node_id -= 1
        t.stale = False

    def prepare(self):
        """Build (or refresh) the tree of every SKU with more than SCAN_LIMIT cells now, so that no
        query pays for it later. Returns the bytes the trees take."""
        cdef int32_t sku, n = self.ledger.n_skus
        with nogil:
            self._drain_raises()
            for sku in range(n):
                if self.ledger.sku_count[sku] > SCAN_LIMIT:
                    self._tree_for(sku)
        return self.tree_bytes

    # -- the pieces of a decision ------------------------------------------------
    cdef int _gate(self, const Query* q, int32_t loc, double km) noexcept nogil:
        # -1 if the location is eligible, else why not (a Reject code)
        cdef int32_t cap
        if not self.info[loc].is_open:
            return REJ_CLOSED
        if self.info[loc].excl_mark == q.excl_gen:
            return REJ_EXCLUDED
        if loc != q.pickup_loc and (self.info[loc].caps & q.need_cap) != q.need_cap:
            return REJ_CAPABILITY
        cap = self.info[loc].capacity
        if cap > 0 and self.ledger.held_shipments[loc] + self.ledger.confirmed_today[loc] >= cap:
            return REJ_CAPACITY
        if km > q.max_km:
            return REJ_DISTANCE
        return -1

    cdef void _costs(self, const PolicyC* pol, int32_t loc, double km, double low_sum, bint extra,
                            Costs* out) noexcept nogil:
        cdef int32_t cap = self.info[loc].capacity
        out.fixed = self.info[loc].fixed_cost + (pol.split_penalty if extra else 0.0)
        out.distance = pol.per_km * km
        out.low_stock = pol.low_stock_weight * low_sum
        if cap > 0:
            out.load = pol.load_weight * (
                <double> (self.ledger.held_shipments[loc] + self.ledger.confirmed_today[loc]) / cap)
        else:
            out.load = 0.0
        out.priority = pol.priority_weight * self.info[loc].priority
        out.total = out.fixed + out.distance + out.low_stock + out.load + out.priority

    cdef double _base(self, const PolicyC* pol, int32_t loc, double km, bint extra) noexcept nogil:
        # the cost without the stock-dependent part: a lower bound for this location
        cdef Costs c
        self._costs(pol, loc, km, 0.0, extra, &c)
        return c.total

    # single location --------------------------------------------------------
    cdef void _consider_single(self, const PolicyC* pol, const Query* q, int32_t loc, int64_t c0, Singles* best,
                               Stats* st) noexcept nogil:
        # ``c0``: the location's cell of the rarest line (q.check_order[0]) when the caller knows it, else -2
        cdef double c2 = chord_sq(self.info[loc].xyz, q.dest)
        cdef double km
        cdef int r, i, j
        cdef double low = 0.0
        cdef int64_t c
        cdef int32_t a
        cdef Costs cost
        st.considered += 1
        # cheap exits first: the chord bound needs no trigonometry
        if best.n > 0 and self._base(pol, loc, chord_sq_to_km_lb(c2), False) > best.cost[0].total + EPS:
            return
        if self._base(pol, loc, chord_sq_to_km_lb(c2), False) > q.single_cap + EPS:
            return
        km = chord_sq_to_km(c2)
        r = self._gate(q, loc, km)
        if r >= 0:
            st.rejected[r] += 1
            return
        if best.n > 0 and self._base(pol, loc, km, False) > best.cost[0].total + EPS:
            return
        cdef int32_t avail[MAX_LINES]
        for j in range(q.n_lines):
            i = q.check_order[j]
            c = c0 if j == 0 and c0 != -2 else self.ledger.find(loc, q.sku[i])
            a = cell_available(&self.ledger.cells[c]) if c >= 0 else 0
            if a < q.qty[i]:
                st.rejected[<int> REJ_NO_STOCK] += 1
                return
            avail[i] = a
        if not q.base_only:
            for i in range(q.n_lines):  # summed in line order, as the reference does
                low += <double> q.qty[i] / avail[i]
        self._costs(pol, loc, km, low, False, &cost)
        if best.n == N_KEEP and not _before(cost.total, loc, best.cost[N_KEEP - 1].total, best.loc[N_KEEP - 1]):
            return
        # insertion into the short sorted list
        j = best.n if best.n < N_KEEP else N_KEEP - 1
        while j > 0 and _before(cost.total, loc, best.cost[j - 1].total, best.loc[j - 1]):
            best.loc[j] = best.loc[j - 1]
            best.km[j] = best.km[j - 1]
            best.cost[j] = best.cost[j - 1]
            j -= 1
        best.loc[j] = loc
        best.km[j] = km
        best.cost[j] = cost
        if best.n < N_KEEP:
            best.n += 1

    cdef void _search_single(self, const PolicyC* pol, const Query* q, Singles* best, Stats* st) noexcept nogil:
        # Whoever fills everything holds the rarest line's SKU: scan its cells when they are few, else walk
        # its tree, cheapest-looking subtree first, skipping subtrees that cannot beat the best found.
        cdef int i, top, node_id
        cdef int32_t c, sku = q.sku[q.check_order[0]], need = q.qty[q.check_order[0]]
        cdef double lb, km_lb
        cdef int stack[KD_STACK]
        cdef const TNode* node
        cdef SkuTree* t = NULL
        best.n = 0
        if self.ledger.sku_count[sku] > SCAN_LIMIT:
            t = self._tree_for(sku)
        if t == NULL:
            st.strategy = 1
            c = self.ledger.sku_head[sku]
            while c >= 0:
                self._consider_single(pol, q, self.ledger.cells[c].loc, c, best, st)
                c = self.ledger.cells[c].next
            return
        st.strategy = 0
        c = self.ledger.sku_head[sku]
        while c != t.head:              # cells added since the tree was built
            self._consider_single(pol, q, self.ledger.cells[c].loc, c, best, st)
            c = self.ledger.cells[c].next
        stack[0] = 0
        top = 1
        while top:
            top -= 1
            node_id = stack[top]
            node = &t.nodes[node_id]
            if node.max_avail < need:
                continue                # no cell below has enough of the rarest line
            lb = self._tnode_lb(pol, q, node, False, &km_lb)
            if not q.base_only:         # the rarest line's low-stock term is at least need / max_avail
                lb += pol.low_stock_weight * need / node.max_avail
            if km_lb > q.max_km + EPS or lb > q.single_cap + EPS:
                continue
            if best.n > 0 and lb > best.cost[0].total + EPS:
                continue
            if node.left < 0:
                self._prefetch_leaf(pol, q, t, node, q.check_order[0], NULL,
                                    best.cost[0].total if best.n > 0 and best.cost[0].total < q.single_cap
                                    else q.single_cap)
                for i in range(node.start, node.end):
                    self._consider_single(pol, q, t.loc[i], t.cell[i], best, st)
            else:
                self._push_tree_children(pol, q, t, node, False, stack, &top)

    cdef void _push_tree_children(self, const PolicyC* pol, const Query* q, const SkuTree* t, const TNode* node,
                                  bint extra, int* stack, int* top) noexcept nogil:
        # the cheaper-looking child is walked first
        cdef double km_lb
        _push_pair(stack, top, node.left, self._tnode_lb(pol, q, &t.nodes[node.left], extra, &km_lb),
                   node.right, self._tnode_lb(pol, q, &t.nodes[node.right], extra, &km_lb))

    cdef void _push_children(self, const Query* q, const KdNode* node, int* stack, int* top) noexcept nogil:
        # the nearer child is walked first
        _push_pair(stack, top, node.left, box_chord_sq(&self.index.nodes[node.left], q.dest),
                   node.right, box_chord_sq(&self.index.nodes[node.right], q.dest))

    # one greedy split step ------------------------------------------------------
    cdef void _consider_step(self, const PolicyC* pol, const Query* q, int32_t loc, int known_line,
                             int64_t known_cell, Plan* plan, int64_t rem_units, double* best_ratio,
                             int32_t* best_loc, double* best_km, Costs* best_cost,
                             int32_t* best_take) noexcept nogil:
        # ``known_cell``: the location's cell of line ``known_line`` when the caller has it (else known_line -1)
        cdef int s, i
        cdef bint extra = plan.n_ship > 0
        cdef double km, c2, low = 0.0, ratio
        cdef int64_t c, units = 0
        cdef int32_t a, t
        cdef int32_t take[MAX_LINES]
        cdef Costs cost
        for s in range(plan.n_ship):
            if plan.loc[s] == loc:
                return
        c2 = chord_sq(self.info[loc].xyz, q.dest)
        if best_loc[0] >= 0 and self._base(pol, loc, chord_sq_to_km_lb(c2), extra) / rem_units > best_ratio[0] + EPS:
            return
        if self._base(pol, loc, chord_sq_to_km_lb(c2), False) + self.min_fixed + pol.split_penalty > q.split_cap + EPS:
            return
        km = chord_sq_to_km(c2)
        if self._gate(q, loc, km) >= 0:
            return
        if self._base(pol, loc, km, False) + self.min_fixed + pol.split_penalty >= q.split_cap:
            return          # cannot be part of a split cheaper than the single location
        if best_loc[0] >= 0 and self._base(pol, loc, km, extra) / rem_units > best_ratio[0] + EPS:
            return
        for i in range(q.n_lines):
            take[i] = 0
            if plan.remaining[i] == 0:
                continue
            c = known_cell if i == known_line else self.ledger.find(loc, q.sku[i])
            if c < 0:
                continue
            a = cell_available(&self.ledger.cells[c])
            if a <= 0:
                continue
            t = a if a < plan.remaining[i] else plan.remaining[i]
            take[i] = t
            units += t
            low += <double> t / a
        if units == 0:
            return
        self._costs(pol, loc, km, low, extra, &cost)
        ratio = cost.total / units
        if best_loc[0] < 0 or _before(ratio, loc, best_ratio[0], best_loc[0]):
            best_ratio[0] = ratio
            best_loc[0] = loc
            best_km[0] = km
            best_cost[0] = cost
            memcpy(best_take, take, q.n_lines * sizeof(int32_t))

    cdef bint _split_step(self, const PolicyC* pol, const Query* q, Plan* plan) noexcept nogil:
        # add the next shipment to ``plan``; False if no location can cover anything
        cdef int i, j, p, n_walk = 0, top, node_id
        cdef int64_t rem_units = 0
        cdef int order[MAX_LINES]
        cdef int64_t units_after[MAX_LINES]
        cdef int32_t c, loc, best_loc = -1
        cdef double best_ratio = INF, best_km = 0.0, lb, km_lb
        cdef Costs best_cost
        cdef int32_t best_take[MAX_LINES]
        cdef int stack[KD_STACK]
        cdef const TNode* node
        cdef SkuTree* t
        cdef bint extra = plan.n_ship > 0
        # A useful location holds one of the remaining SKUs: walk each one's cells (its list when short,
        # else its tree), each location once, the rarest SKU first. A location that the walk of SKU i leaves
        # unvisited either has no unit of it or was ruled out for good (its bound already lost to a ratio
        # that only falls since, or the distance or split cap). So a location first met in the walk of the
        # p-th SKU covers units of that SKU and the later ones only: ``units_after[p]`` divides its bound,
        # which makes the walk of a popular SKU (last) prune nearly as hard as a one-line search.
        for i in range(q.n_lines):
            if plan.remaining[i] == 0:
                continue
            j = n_walk
            while j > 0 and self.ledger.sku_count[q.sku[order[j - 1]]] > self.ledger.sku_count[q.sku[i]]:
                order[j] = order[j - 1]
                j -= 1
            order[j] = i
            n_walk += 1
        for p in range(n_walk - 1, -1, -1):
            rem_units += plan.remaining[order[p]]
            units_after[p] = rem_units
        self.stamp_gen += 1
        if self.stamp_gen == 0:     # wrapped: clear the marks
            memset(self.stamp, 0, max(self.n, 1) * sizeof(uint32_t))
            self.stamp_gen = 1
        for p in range(n_walk):
            i = order[p]
            rem_units = units_after[p]
            t = self._tree_for(q.sku[i]) if self.ledger.sku_count[q.sku[i]] > SCAN_LIMIT else NULL
            c = self.ledger.sku_head[q.sku[i]]
            while c >= 0 and (t == NULL or c != t.head):
                loc = self.ledger.cells[c].loc
                if self.stamp[loc] != self.stamp_gen:
                    self.stamp[loc] = self.stamp_gen
                    self._consider_step(pol, q, loc, i, c, plan, rem_units, &best_ratio, &best_loc, &best_km,
                                        &best_cost, best_take)
                c = self.ledger.cells[c].next
            if t == NULL:
                continue
            stack[0] = 0
            top = 1
            while top:
                top -= 1
                node_id = stack[top]
                node = &t.nodes[node_id]
                if node.max_avail <= 0:
                    continue            # nothing below has a unit of this line
                lb = self._tnode_lb(pol, q, node, extra, &km_lb)
                if km_lb > q.max_km + EPS:
                    continue
                if best_loc >= 0 and lb / rem_units > best_ratio + EPS:
                    continue
                if (lb - (pol.split_penalty if extra else 0.0)) + self.min_fixed + pol.split_penalty > q.split_cap + EPS:
                    continue
                if node.left < 0:
                    self._prefetch_leaf(pol, q, t, node, i, plan.remaining, q.split_cap - self.min_fixed)
                    for c in range(node.start, node.end):
                        loc = t.loc[c]
                        if self.stamp[loc] != self.stamp_gen:
                            self.stamp[loc] = self.stamp_gen
                            self._consider_step(pol, q, loc, i, t.cell[c], plan, rem_units, &best_ratio,
                                                &best_loc, &best_km, &best_cost, best_take)
                else:
                    self._push_tree_children(pol, q, t, node, extra, stack, &top)
        if best_loc < 0:
            return False
        i = plan.n_ship
        plan.loc[i] = best_loc
        plan.km[i] = best_km
        plan.cost[i] = best_cost
        memcpy(plan.take[i], best_take, q.n_lines * sizeof(int32_t))
        for c in range(q.n_lines):
            plan.remaining[c] -= best_take[c]
        plan.total += best_cost.total
        plan.n_ship += 1
        return True

    cdef void _split(self, const PolicyC* pol, const Query* q, Plan* plan) noexcept nogil:
        cdef int i
        cdef bint left
        plan.n_ship = 0
        plan.total = 0.0
        for i in range(q.n_lines):
            plan.remaining[i] = q.qty[i]
        while plan.n_ship < q.max_shipments:
            left = False
            for i in range(q.n_lines):
                if plan.remaining[i] > 0:
                    left = True
            if not left or not self._split_step(pol, q, plan):
                return

    cdef Status _hold_plan(self, const Query* q, const Plan* plan, int64_t* cells) noexcept nogil:
        # hold every (shipment, line) of the plan; cells[s * MAX_LINES + i] gets the cell used
        cdef int s, i, s2, i2, upto
        cdef int64_t c
        for s in range(plan.n_ship):
            for i in range(q.n_lines):
                cells[s * MAX_LINES + i] = -1
                if plan.take[s][i] == 0:
                    continue
                c = self.ledger.find(plan.loc[s], q.sku[i])
                if c < 0 or self.ledger.hold(c, plan.take[s][i]) != ST_OK:
                    # cannot happen under the engine lock; undo and report rather than corrupt
                    for s2 in range(s + 1):
                        upto = q.n_lines if s2 < s else i
                        for i2 in range(upto):
                            if cells[s2 * MAX_LINES + i2] >= 0:
                                self.ledger.unhold(cells[s2 * MAX_LINES + i2], plan.take[s2][i2])
                    return ST_INVARIANT
                cells[s * MAX_LINES + i] = c
        cdef int32_t* held = self.ledger.held_shipments
        for s in range(plan.n_ship):
            held[plan.loc[s]] += 1
        return ST_OK

    # -- exact plans ----------------------------------------------------------------
    cdef void _group(self, const PolicyC* pol, const Query* q, int mask, double cap, Group* out,
                     Stats* st) noexcept nogil:
        # the cheapest single location for the lines in ``mask`` (all their units), if it costs <= cap
        cdef Query sq = q[0]
        cdef Singles b
        cdef int i, n = 0, strategy = st.strategy
        for i in range(q.n_lines):
            if mask & (1 << i):
                sq.sku[n] = q.sku[i]
                sq.qty[n] = q.qty[i]
                n += 1
        sq.n_lines = n
        _order_by_rarity(&sq, self.ledger.sku_count)
        sq.single_cap = cap
        sq.base_only = False
        self._search_single(pol, &sq, &b, st)
        st.strategy = strategy
        self._set_group(pol, &b, cap, out)

    cdef void _set_group(self, const PolicyC* pol, const Singles* b, double cap, Group* out) noexcept nogil:
        # a search's winner as a group, if it is within the cap the search was pruned with (past it the
        # winner is not reliably the cheapest)
        out.loc = -1
        if b.n > 0 and b.cost[0].total <= cap + EPS:
            out.loc = b.loc[0]
            out.km = b.km[0]
            out.first = b.cost[0]
            out.later = b.cost[0]
            out.later.fixed = self.info[out.loc].fixed_cost + pol.split_penalty
            out.later.total = (out.later.fixed + out.later.distance + out.later.low_stock + out.later.load
                               + out.later.priority)

    cdef void _partitions(self, const PolicyC* pol, const Query* q, Exact* ex) noexcept nogil:
        # Every partition of the lines into at most max_shipments groups, each group at its own cheapest
        # location, the groups' locations distinct. Enumerated as restricted growth strings: line i joins
        # each group opened so far, in order, then opens the next one. Totals are summed from the last
        # parcel to the first (the first parcel pays no split penalty). The best is the cheapest (ties:
        # fewer parcels, then the first enumerated), or with fewest_first the fewest parcels, then the
        # cheapest. ``next_total``: the cheapest other partition.
        cdef int masks[EXACT_LINES]
        ex.n = 0
        ex.total = INF
        ex.next_total = INF
        memset(masks, 0, sizeof(masks))
        self._partition_from(pol, ex, q.n_lines, min(q.max_shipments, q.n_lines), 0, 0, masks)

    cdef void _partition_from(self, const PolicyC* pol, Exact* ex, int n, int k, int i, int m,
                              int* masks) noexcept nogil:
        cdef int s, s2
        cdef double t
        cdef bint better
        cdef const Group* g
        if i == n:
            for s in range(m):
                g = &ex.g[masks[s]]
                if g.loc < 0:
                    return
                for s2 in range(s):
                    if ex.g[masks[s2]].loc == g.loc:
                        return
            t = 0.0
            s = m - 1
            while s >= 0:
                g = &ex.g[masks[s]]
                t = (g.first.total if s == 0 else g.later.total) + t
                s -= 1
            if pol.fewest_first:
                better = ex.n == 0 or m < ex.n or (m == ex.n and t < ex.total)
            else:
                better = ex.n == 0 or t < ex.total or (t == ex.total and m < ex.n)
            if better:
                if ex.n > 0 and ex.total < ex.next_total:
                    ex.next_total = ex.total
                ex.n = m
                ex.total = t
                for s in range(m):
                    ex.mask[s] = masks[s]
            elif t < ex.next_total:
                ex.next_total = t
            return
        for s in range(m):
            masks[s] |= 1 << i
            self._partition_from(pol, ex, n, k, i + 1, m, masks)
            masks[s] &= ~(1 << i)
        if m < k:
            masks[m] = 1 << i
            self._partition_from(pol, ex, n, k, i + 1, m + 1, masks)
            masks[m] = 0

    cdef double _line_floor(self, const PolicyC* pol, const Query* q, int i, Stats* st) noexcept nogil:
        # The cheapest parcel holding a unit of line i, priced without its stock-dependent part (INF: none);
        # searched once per decision (floor_cache is reset by _route_one).
        cdef Query sq
        cdef Singles b
        cdef int strategy = st.strategy
        if self.floor_cache[i] >= 0.0:
            return self.floor_cache[i]
        sq = q[0]
        sq.n_lines = 1
        sq.base_only = True
        sq.single_cap = INF
        sq.check_order[0] = 0
        sq.sku[0] = q.sku[i]
        sq.qty[0] = 1
        self._search_single(pol, &sq, &b, st)
        st.strategy = strategy
        self.floor_cache[i] = b.cost[0].total if b.n > 0 else INF
        return self.floor_cache[i]

    cdef double _line_bound(self, const PolicyC* pol, const Query* q, Stats* st) noexcept nogil:
        # A lower bound on any plan, splits of a line's units included: every line leaves from some
        # location holding a unit of it, and that parcel costs at least its line floor. The largest floor.
        cdef int i
        cdef double lb = 0.0, f
        for i in range(q.n_lines):
            f = self._line_floor(pol, q, i, st)
            if f < INF and f > lb:
                lb = f
        return lb

    cdef int _route_one(self, const PolicyC* pol, Query* q, bint hold, Singles* best, Plan* plan, Stats* st,
                        int64_t* cells, int* split_reason, Outcome* out) noexcept nogil:
        # One order, its Query filled in: the plan (see the module docstring) and (hold) its holds.
        # 0 = a full plan, 1 = unfulfillable (``plan.remaining``: what the greedy plan left), 2 = error.
        cdef int i, s, mask, n_lines = q.n_lines
        cdef int full = (1 << n_lines) - 1 if n_lines <= EXACT_LINES else 0
        cdef bint can_split = q.max_shipments > 1
        cdef bint exact = can_split and 2 <= n_lines <= EXACT_LINES and pol.exact_plans
        cdef bint use_greedy = False
        cdef double shortcut = 2.0 * self.min_fixed + pol.split_penalty
        cdef double rest = self.min_fixed + pol.split_penalty, ub, lo, hi, two = INF, cheapest = INF
        cdef bint needs_greedy = False       # a line of two or more units could be split over locations
        cdef bint complete = False
        cdef Exact ex
        cdef const Group* g
        split_reason[0] = 0
        out.optimal = False
        out.next_best = INF
        out.lower_bound = 0.0
        plan.n_ship = 0
        q.base_only = False
        for i in range(n_lines):
            self.floor_cache[i] = -1.0
            if q.qty[i] > 1:
                needs_greedy = True
        # 1. a single location. When the exact search may follow, only up to the price no plan of two or
        # more parcels can undercut (the two cheapest eligible locations and a penalty): most orders end here.
        if exact and not pol.fewest_first:
            two = self._two_parcels_bound(pol, q, &cheapest)
            rest = cheapest + pol.split_penalty
        q.single_cap = two if exact and not pol.fewest_first else INF
        self._search_single(pol, q, best, st)
        q.single_cap = INF
        if best.n > 0 and (not can_split or pol.fewest_first or (
                best.cost[0].total <= shortcut if not exact else best.cost[0].total < two - EPS)):
            self._take_single(q, best, plan)
            out.optimal = True
            out.lower_bound = plan.total
            out.next_best = best.cost[1].total if best.n > 1 else INF
            return self._finish(q, hold, plan, cells)
        if not exact:
            # one line, or more than EXACT_LINES: the single, unless the greedy split is strictly cheaper
            # or the only way (with no splits allowed it only measures what one parcel could cover)
            q.split_cap = best.cost[0].total if best.n > 0 else INF
            self._split(pol, q, plan)
            complete = plan.n_ship > 0
            for i in range(n_lines):
                if plan.remaining[i] > 0:
                    complete = False
            if complete and (best.n == 0 or (plan.n_ship > 1 and plan.total < best.cost[0].total)):
                split_reason[0] = 2 if best.n > 0 else 1
                out.next_best = best.cost[0].total if best.n > 0 else INF
                out.lower_bound = self._line_bound(pol, q, st)
            elif best.n > 0:
                out.next_best = plan.total if complete and plan.n_ship > 1 else (
                    best.cost[1].total if best.n > 1 else INF)
                self._take_single(q, best, plan)
                out.optimal = n_lines == 1
                out.lower_bound = plan.total if out.optimal else self._line_bound(pol, q, st)
            else:
                return 1
            return self._finish(q, hold, plan, cells)
        # 2. the exact search. Each line alone first: if one cannot leave whole from any location, no plan
        # keeps every line whole (nor can a single location fill the order) and only the greedy split is left.
        for i in range(n_lines):
            self._group(pol, q, 1 << i, INF, &ex.g[1 << i], st)
            if ex.g[1 << i].loc < 0:
                return self._greedy_only(pol, q, plan, INF, split_reason, out, st, cells, hold)
        # A parcel per line is a plan (when allowed and the locations differ): its cost caps the searches.
        ub = INF
        if q.max_shipments >= n_lines:
            ub = 0.0
            s = n_lines - 1
            while s >= 0 and ub < INF:
                g = &ex.g[1 << s]
                for i in range(s):
                    if ex.g[1 << i].loc == g.loc:
                        ub = INF
                if ub < INF:
                    ub = (g.first.total if s == 0 else g.later.total) + ub
                s -= 1
        if pol.fewest_first:
            ub = INF                    # a cost cap cannot prune when fewer parcels win at any cost
            ex.g[full].loc = -1         # step 1 found no single location at all
        else:
            # The single location, up to that cap: "found" decides CHEAPER vs NO_SINGLE_LOCATION. It beats
            # every plan of two or more whole-line parcels if it costs less than the dearest line alone plus
            # the cheapest line alone plus a penalty (each of the parcels costs at least its dearest line's).
            q.single_cap = ub
            self._search_single(pol, q, best, st)
            q.single_cap = INF
            self._set_group(pol, best, ub, &ex.g[full])
            if ex.g[full].loc >= 0:
                lo = INF
                hi = 0.0
                for i in range(n_lines):
                    if ex.g[1 << i].first.total < lo:
                        lo = ex.g[1 << i].first.total
                    if ex.g[1 << i].first.total > hi:
                        hi = ex.g[1 << i].first.total
                if ex.g[full].first.total < hi + lo + pol.split_penalty - EPS and (
                        not needs_greedy or ex.g[full].first.total < self._unit_split_bound(pol, q, st) - EPS):
                    self._take_single(q, best, plan)
                    out.optimal = True
                    out.lower_bound = plan.total
                    out.next_best = best.cost[1].total if best.n > 1 else INF
                    if ub < out.next_best and n_lines > 1 and ub > plan.total:
                        out.next_best = ub
                    return self._finish(q, hold, plan, cells)
                if ex.g[full].first.total < ub:
                    ub = ex.g[full].first.total
        # a group that is one of several parcels leaves at least one more parcel (and a penalty) to pay for
        for mask in range(1, full):
            if mask & (mask - 1):       # two or more lines (single lines are done)
                self._group(pol, q, mask, ub - rest, &ex.g[mask], st)
        self._partitions(pol, q, &ex)
        # 3. the greedy split, which may split a line's units, where it could beat every whole-line plan
        # (only a greedy plan that splits a line's units can beat the exact one: see _unit_split_bound)
        if ex.n == 0 or (needs_greedy and (pol.fewest_first or ex.total >= self._unit_split_bound(pol, q, st) - EPS)):
            q.split_cap = INF if (ex.n == 0 or pol.fewest_first) else ex.total
            self._split(pol, q, plan)
            complete = plan.n_ship > 0
            for i in range(n_lines):
                if plan.remaining[i] > 0:
                    complete = False
            # (by more than rounding: the greedy plan may be a whole-line plan summed in another order)
            if complete:
                if ex.n == 0:
                    use_greedy = True
                elif pol.fewest_first:
                    use_greedy = plan.n_ship < ex.n or (plan.n_ship == ex.n and plan.total < ex.total - EPS)
                else:
                    use_greedy = plan.total < ex.total - EPS
        if use_greedy:
            out.next_best = ex.total
            out.lower_bound = self._line_bound(pol, q, st)
        elif ex.n > 0:
            out.next_best = ex.next_total
            if complete and ex.total + EPS < plan.total < out.next_best:
                out.next_best = plan.total
            out.optimal = True
            out.lower_bound = ex.total
            plan.n_ship = ex.n
            plan.total = ex.total
            for i in range(n_lines):
                plan.remaining[i] = 0
            for s in range(ex.n):
                g = &ex.g[ex.mask[s]]
                plan.loc[s] = g.loc
                plan.km[s] = g.km
                plan.cost[s] = g.first if s == 0 else g.later
                for i in range(n_lines):
                    plan.take[s][i] = q.qty[i] if ex.mask[s] & (1 << i) else 0
        else:
            return 1                    # covered: what the greedy plan reached
        if plan.n_ship > 1:
            split_reason[0] = 2 if ex.g[full].loc >= 0 else 1
        return self._finish(q, hold, plan, cells)

    cdef double _two_parcels_bound(self, const PolicyC* pol, const Query* q, double* cheapest) noexcept nogil:
        # No plan of two parcels or more costs less than this: the two cheapest eligible locations' costs
        # without their stock-dependent parts, plus one penalty (``cheapest``: the first of them). A walk of
        # the location tree, nearer child first, pruned by each node's cheapest fixed cost and priority.
        cdef double b0 = INF, b1 = INF, lb, c2, base
        cdef int32_t l0 = -1, l1 = -1, loc
        cdef int top, node_id, j
        cdef int stack[KD_STACK]
        cdef const KdNode* node
        if self.n == 0:
            return INF
        stack[0] = 0
        top = 1
        while top:
            top -= 1
            node_id = stack[top]
            node = &self.index.nodes[node_id]
            lb = (self.node_min_fixed[node_id] + pol.per_km * chord_sq_to_km_lb(box_chord_sq(node, q.dest))
                  + pol.priority_weight * self.node_min_priority[node_id])
            if lb > b1 + EPS:
                continue
            if node.left >= 0:
                self._push_children(q, node, stack, &top)
                continue
            for j in range(node.start, node.end):
                loc = self.index.perm[j]
                c2 = chord_sq(self.info[loc].xyz, q.dest)
                if self._base(pol, loc, chord_sq_to_km_lb(c2), False) > b1 + EPS:
                    continue
                if self._gate(q, loc, chord_sq_to_km(c2)) >= 0:
                    continue
                base = self._base(pol, loc, chord_sq_to_km(c2), False)
                if _before(base, loc, b0, l0):
                    b1, l1 = b0, l0
                    b0, l0 = base, loc
                elif _before(base, loc, b1, l1):
                    b1, l1 = base, loc
        cheapest[0] = b0
        return b0 + b1 + pol.split_penalty

    cdef double _unit_split_bound(self, const PolicyC* pol, const Query* q, Stats* st) noexcept nogil:
        # The greedy split costs no less than this if it splits the units of a line: such a line leaves in two
        # parcels or more, each from a holder of a unit of it (each at least the line's floor), one of them a
        # later parcel, and one of them takes all that its location has (which is why the line is split), a
        # low-stock term of a whole ``low_stock_weight``. A greedy plan that splits no line is a whole-line
        # plan, priced by the exact search. INF when no line has two units.
        cdef int i
        cdef double bound = INF, t
        for i in range(q.n_lines):
            if q.qty[i] < 2:
                continue
            t = 2.0 * self._line_floor(pol, q, i, st) + pol.split_penalty + pol.low_stock_weight
            if t < bound:
                bound = t
        return bound

    cdef int _greedy_only(self, const PolicyC* pol, Query* q, Plan* plan, double split_cap, int* split_reason,
                          Outcome* out, Stats* st, int64_t* cells, bint hold) noexcept nogil:
        # no whole-line plan exists: the greedy split, if it covers everything
        cdef int i
        q.split_cap = split_cap
        self._split(pol, q, plan)
        for i in range(q.n_lines):
            if plan.remaining[i] > 0:
                return 1
        if plan.n_ship == 0:
            return 1
        split_reason[0] = 1 if plan.n_ship > 1 else 0
        out.lower_bound = self._line_bound(pol, q, st)
        return self._finish(q, hold, plan, cells)

    cdef void _take_single(self, const Query* q, const Singles* best, Plan* plan) noexcept nogil:
        cdef int i
        plan.n_ship = 1
        plan.loc[0] = best.loc[0]
        plan.km[0] = best.km[0]
        plan.cost[0] = best.cost[0]
        plan.total = best.cost[0].total
        for i in range(q.n_lines):
            plan.take[0][i] = q.qty[i]
            plan.remaining[i] = 0

    cdef int _finish(self, const Query* q, bint hold, const Plan* plan, int64_t* cells) noexcept nogil:
        if hold and self._hold_plan(q, plan, cells) != ST_OK:
            return 2
        return 0


    # -- the Python entry points --------------------------------------------------
    def route(self, NativePolicy pol, double lat, double lon, int32_t pickup_loc, skus, qtys, int need_cap,
              double max_km, excluded, int max_shipments, bint hold):
        """Decide (and optionally hold) one order.

        Arguments are already validated and interned by the engine. Returns
        ``(status, shipments, total, covered, considered, rejected, singles, strategy, split_reason)``:
        ``status`` 0 = a full plan (held if ``hold``), 1 = unfulfillable (nothing held),
        2 = internal error; ``shipments`` is a tuple of
        ``(loc, km, (fixed, distance, low_stock, load, priority), takes, cells)``
        (``cells`` are the held cell indices, or ``None`` when not held);
        ``covered`` the units per line the best plan found covers; ``singles`` the
        cheapest single locations ``(loc, total, km)``; ``split_reason`` 0 none,
        1 no single location, 2 cheaper.
        """
        cdef Query q
        cdef Singles best
        cdef Plan plan
        cdef Stats st
        cdef Outcome out
        cdef int i, s, n_lines = len(skus), n_ex = len(excluded), split_reason = 0, status = 0
        cdef int32_t loc
        cdef int64_t cells[MAX_SHIPMENTS * MAX_LINES]
        if n_lines < 1 or n_lines > MAX_LINES or len(qtys) != n_lines:
            raise ValueError("order size out of range")
        for i in range(n_lines):
            q.sku[i] = skus[i]
            q.qty[i] = qtys[i]
            if q.sku[i] < 0 or q.sku[i] >= self.ledger.n_skus or q.qty[i] <= 0:
                raise ValueError("line out of range")
        if pickup_loc >= self.n:
            raise ValueError("pickup location out of range")
        # exclusions are marks, so any number of them costs O(1) per location examined
        self.excl_gen += 1
        if self.excl_gen == 0:          # wrapped: clear the marks
            for loc in range(self.n):
                self.info[loc].excl_mark = 0
            self.excl_gen = 1
        for i in range(n_ex):
            loc = excluded[i]
            if loc < 0 or loc >= self.n:
                raise ValueError("excluded location out of range")
            self.info[loc].excl_mark = self.excl_gen
        q.excl_gen = self.excl_gen
        q.n_lines = n_lines
        _order_by_rarity(&q, self.ledger.sku_count)
        q.pickup_loc = pickup_loc
        q.need_cap = <uint8_t> need_cap
        q.max_km = max_km
        q.max_shipments = max(1, min(max_shipments, MAX_SHIPMENTS))
        q.single_cap = INF
        memset(&st, 0, sizeof(Stats))
        with nogil:
            self._drain_raises()
            if pickup_loc >= 0:
                q.dest[0] = self.info[pickup_loc].xyz[0]
                q.dest[1] = self.info[pickup_loc].xyz[1]
                q.dest[2] = self.info[pickup_loc].xyz[2]
            else:
                unit_vector(lat, lon, q.dest)
            status = self._route_one(&pol.p, &q, hold, &best, &plan, &st, cells, &split_reason, &out)
        shipments = []
        if status == 0:
            for s in range(plan.n_ship):
                shipments.append((
                    plan.loc[s], plan.km[s],
                    (plan.cost[s].fixed, plan.cost[s].distance, plan.cost[s].low_stock, plan.cost[s].load,
                     plan.cost[s].priority),
                    tuple([plan.take[s][i] for i in range(n_lines)]),
                    tuple([cells[s * MAX_LINES + i] for i in range(n_lines)]) if hold else None))
        covered = tuple([q.qty[i] - plan.remaining[i] for i in range(n_lines)])
        chosen = set(plan.loc[s] for s in range(plan.n_ship)) if status == 0 else set()
        singles = tuple([(best.loc[i], best.cost[i].total, best.km[i]) for i in range(best.n)
                         if best.loc[i] not in chosen])
        return (status, tuple(shipments), plan.total if status == 0 else 0.0, covered, st.considered,
                tuple([st.rejected[i] for i in range(N_REJECT)]), singles, st.strategy, split_reason,
                bool(out.optimal) if status == 0 else False,
                out.next_best if status == 0 and out.next_best < INF else None,
                out.lower_bound if status == 0 else 0.0)

    def route_many(self, NativePolicy pol, const double[::1] lat, const double[::1] lon,
                   const int64_t[::1] line_off, const int32_t[::1] sku, const int32_t[::1] qty, int need_cap,
                   double max_km, int max_shipments, uint8_t[::1] status, uint8_t[::1] split,
                   int32_t[::1] n_ship, int32_t[::1] ship_loc, double[::1] ship_km, double[::1] ship_cost,
                   int32_t[::1] take, int32_t[::1] covered, int64_t[::1] line_avail):
        """Decide a batch of delivery orders in order, each seeing the holds of those before it, then give
        every hold back: the state is as it was, the plans are in the arrays.

        Order ``i`` has lines ``line_off[i]:line_off[i+1]`` of ``sku``/``qty`` (interned, validated) and goes
        to ``(lat[i], lon[i])``; ``status[i]`` on entry is 0 to decide it, anything else to skip it. Out:
        ``status`` 0 = a full plan, 1 = unfulfillable, 2 = internal error; ``split`` the split reason;
        ``n_ship``; per shipment slot ``i * max_shipments + s``: ``ship_loc``, ``ship_km``, five
        ``ship_cost`` parts; ``take[line_off[i] * max_shipments + s * n_lines + l]``; per line ``covered``
        (units the best plan covers) and, for unfulfillable orders, ``line_avail`` (the SKU's
        network-wide available units at the order's turn). Returns the number of full plans.
        """
        cdef int64_t n = lat.shape[0], i, k, base, held_orders = 0
        cdef int s, l, n_lines, reason = 0, code
        cdef int max_ship = max(1, min(max_shipments, MAX_SHIPMENTS))
        cdef Query q
        cdef Singles best
        cdef Plan plan
        cdef Stats st
        cdef Outcome out
        cdef int64_t cells[MAX_SHIPMENTS * MAX_LINES]
        if (lon.shape[0] != n or line_off.shape[0] != n + 1 or status.shape[0] != n or split.shape[0] != n
                or n_ship.shape[0] != n or ship_loc.shape[0] < n * max_ship or ship_km.shape[0] < n * max_ship
                or ship_cost.shape[0] < 5 * n * max_ship or covered.shape[0] != sku.shape[0]
                or line_avail.shape[0] != sku.shape[0] or qty.shape[0] != sku.shape[0]
                or take.shape[0] < sku.shape[0] * max_ship or (n and line_off[n] != sku.shape[0])):
            raise ValueError("route_many: array lengths do not match")
        for i in range(n):
            n_lines = <int> (line_off[i + 1] - line_off[i])
            if status[i] == 0 and (n_lines < 1 or n_lines > MAX_LINES):
                raise ValueError("order size out of range")
            for k in range(line_off[i], line_off[i + 1]):
                if status[i] == 0 and (sku[k] < 0 or sku[k] >= self.ledger.n_skus or qty[k] <= 0):
                    raise ValueError("line out of range")
        # hold-and-undo needs the cells of every hold taken: one array for the whole batch
        all_cells = np.full(sku.shape[0] * max_ship, -1, dtype=np.int64)
        cdef int64_t[::1] kept = all_cells
        cdef int32_t* held = self.ledger.held_shipments
        cdef int64_t* sku_avail = self.ledger.sku_available
        cdef Ledger ledger = self.ledger
        self.excl_gen += 1              # a generation no location is marked with: nothing excluded
        if self.excl_gen == 0:
            for loc in range(self.n):
                self.info[loc].excl_mark = 0
            self.excl_gen = 1
        with nogil:
            self._drain_raises()
            for i in range(n):
                if status[i] != 0:
                    continue
                n_lines = <int> (line_off[i + 1] - line_off[i])
                for l in range(n_lines):
                    q.sku[l] = sku[line_off[i] + l]
                    q.qty[l] = qty[line_off[i] + l]
                q.n_lines = n_lines
                q.excl_gen = self.excl_gen
                _order_by_rarity(&q, ledger.sku_count)
                q.pickup_loc = -1
                q.need_cap = <uint8_t> need_cap
                q.max_km = max_km
                q.max_shipments = max_ship
                q.single_cap = INF
                memset(&st, 0, sizeof(Stats))
                unit_vector(lat[i], lon[i], q.dest)
                code = self._route_one(&pol.p, &q, True, &best, &plan, &st, cells, &reason, &out)
                status[i] = <uint8_t> code
                split[i] = <uint8_t> reason
                base = line_off[i]
                for l in range(n_lines):
                    covered[base + l] = q.qty[l] - plan.remaining[l]
                if code != 0:
                    n_ship[i] = 0
                    for l in range(n_lines):
                        line_avail[base + l] = sku_avail[q.sku[l]]
                    continue
                held_orders += 1
                n_ship[i] = plan.n_ship
                for s in range(plan.n_ship):
                    k = i * max_ship + s
                    ship_loc[k] = plan.loc[s]
                    ship_km[k] = plan.km[s]
                    ship_cost[5 * k] = plan.cost[s].fixed
                    ship_cost[5 * k + 1] = plan.cost[s].distance
                    ship_cost[5 * k + 2] = plan.cost[s].low_stock
                    ship_cost[5 * k + 3] = plan.cost[s].load
                    ship_cost[5 * k + 4] = plan.cost[s].priority
                    for l in range(n_lines):
                        take[base * max_ship + s * n_lines + l] = plan.take[s][l]
                        kept[base * max_ship + s * n_lines + l] = cells[s * MAX_LINES + l]
            # give everything back, newest first: the state is exactly as it was
            i = n
            while i > 0:
                i -= 1
                if status[i] != 0:
                    continue
                n_lines = <int> (line_off[i + 1] - line_off[i])
                base = line_off[i]
                for s in range(n_ship[i] - 1, -1, -1):
                    held[ship_loc[i * max_ship + s]] -= 1
                    for l in range(n_lines - 1, -1, -1):
                        k = base * max_ship + s * n_lines + l
                        if kept[k] >= 0:
                            ledger.unhold(kept[k], take[k])
        return held_orders

    def nearest_filling(self, double lat, double lon, skus, qtys, int k, double radius_km, int need_cap):
        """Up to ``k`` open locations with ``need_cap`` within ``radius_km`` that each hold
        every ``(sku, qty)`` available; ``[(loc, km), ...]`` nearest first (ties: lower index).
        """
        cdef Query q
        cdef int i, n_lines = len(skus), top, node_id, rarest = 0, n_found = 0, j
        cdef int32_t c, loc
        cdef double c2, radius_c2, half
        cdef int stack[KD_STACK]
        cdef KdNode* node
        if n_lines < 1 or n_lines > MAX_LINES or len(qtys) != n_lines or k < 1:
            raise ValueError("basket or k out of range")
        for i in range(n_lines):
            q.sku[i] = skus[i]
            q.qty[i] = qtys[i]
        q.n_lines = n_lines
        unit_vector(lat, lon, q.dest)
        half = radius_km / (2.0 * 6371.0088)
        radius_c2 = (2.0 * sin(half)) ** 2 if half < 1.5707963267948966 else 4.0
        cdef double[::1] best_c2
        cdef int32_t[::1] best_loc
        best_c2_arr = np.full(k, INF)
        best_loc_arr = np.full(k, -1, dtype=np.int32)
        best_c2 = best_c2_arr
        best_loc = best_loc_arr
        for i in range(1, n_lines):
            if self.ledger.sku_count[q.sku[i]] < self.ledger.sku_count[q.sku[rarest]]:
                rarest = i
        with nogil:
            if self.ledger.sku_count[q.sku[rarest]] <= SCAN_LIMIT:
                c = self.ledger.sku_head[q.sku[rarest]]
                while c >= 0:
                    loc = self.ledger.cells[c].loc
                    self._offer(&q, loc, need_cap, radius_c2, k, &n_found, &best_c2[0], &best_loc[0])
                    c = self.ledger.cells[c].next
            elif self.n > 0:
                stack[0] = 0
                top = 1
                while top:
                    top -= 1
                    node_id = stack[top]
                    node = &self.index.nodes[node_id]
                    c2 = box_chord_sq(node, q.dest)
                    if c2 > radius_c2 or (n_found == k and c2 > best_c2[k - 1]):
                        continue
                    if node.left < 0:
                        for j in range(node.start, node.end):
                            self._offer(&q, self.index.perm[j], need_cap, radius_c2, k, &n_found,
                                        &best_c2[0], &best_loc[0])
                    else:
                        self._push_children(&q, node, stack, &top)
        return [(best_loc[i], chord_sq_to_km(best_c2[i])) for i in range(n_found)]

    cdef void _offer(self, const Query* q, int32_t loc, int need_cap, double radius_c2, int k, int* n_found,
                     double* best_c2, int32_t* best_loc) noexcept nogil:
        cdef double c2 = chord_sq(self.info[loc].xyz, q.dest)
        cdef int i, j
        cdef int64_t c
        if c2 > radius_c2 or not self.info[loc].is_open or (self.info[loc].caps & need_cap) != need_cap:
            return
        if n_found[0] == k and not _before(c2, loc, best_c2[k - 1], best_loc[k - 1]):
            return
        for i in range(q.n_lines):
            c = self.ledger.find(loc, q.sku[i])
            if c < 0 or cell_available(&self.ledger.cells[c]) < q.qty[i]:
                return
        j = n_found[0] if n_found[0] < k else k - 1
        while j > 0 and _before(c2, loc, best_c2[j - 1], best_loc[j - 1]):
            best_c2[j] = best_c2[j - 1]
            best_loc[j] = best_loc[j - 1]
            j -= 1
        best_c2[j] = c2
        best_loc[j] = loc
        if n_found[0] < k:
            n_found[0] += 1

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
* *Split*: greedy, at most ``max_shipments`` steps: each step takes the unused
  eligible location with the least cost per unit it can cover of what remains
  (ties: lower index) and covers ``min(available, remaining)`` of each line.
  When a single location exists at cost ``S``, only locations that could be
  part of a cheaper plan take part: a plan of two or more shipments that uses
  ``l`` costs at least ``base(l) + min_fixed + split_penalty`` (``base`` = the
  cost without the low-stock term), so ``l`` is left out when that is ``>= S``.
  That bound is also a hard search radius, which keeps split searches short.
* The answer is the single location, unless the split plan covers everything
  with more than one shipment at a strictly lower total cost. A split plan can
  only win if the single costs more than two cheapest fixed costs plus the split
  penalty, so it is not even computed otherwise.

Every search is a depth-first walk of the k-d tree, nearer child first, that
skips a subtree when the cheapest cost anything in it could have (cheapest
fixed cost + distance to its box) cannot beat what is already found; or, when
an order holds a rare SKU, a scan of the few cells of that SKU.
"""

import numpy as np

from libc.stdlib cimport malloc, free
from libc.string cimport memset, memcpy
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t
from pyomni._core.status cimport *
from pyomni._core.router cimport *
from pyomni._core.ledger cimport Ledger, Cell, cell_available
from pyomni._core.geo cimport (LocationIndex, KdNode, KD_STACK, unit_vector, chord_sq, chord_sq_to_km,
                               chord_sq_to_km_lb, box_chord_sq, sin)

cdef double INF = 1e300
# Prune only when a bound exceeds the best by more than rounding could explain,
# so a pruned location can never tie or win.
cdef double EPS = 1e-9

REJECT_NAMES = ("CLOSED", "EXCLUDED", "CAPABILITY", "CAPACITY", "DISTANCE", "NO_STOCK")
MAX_LINES_ = MAX_LINES
MAX_SHIPMENTS_ = MAX_SHIPMENTS


cdef class NativePolicy:
    """A routing policy's weights in native form (built once per policy)."""

    def __cinit__(self, double cost_per_km, double circuity, double split_penalty,
                  double low_stock_weight, double load_weight, double priority_weight):
        self.p.cost_per_km = cost_per_km
        self.p.circuity = circuity
        self.p.split_penalty = split_penalty
        self.p.low_stock_weight = low_stock_weight
        self.p.load_weight = load_weight
        self.p.priority_weight = priority_weight
        self.p.per_km = cost_per_km * circuity

    def __reduce__(self):
        return (NativePolicy, (self.p.cost_per_km, self.p.circuity, self.p.split_penalty,
                               self.p.low_stock_weight, self.p.load_weight, self.p.priority_weight))


cdef inline bint _before(double cost_a, int32_t loc_a, double cost_b, int32_t loc_b) noexcept nogil:
    return cost_a < cost_b or (cost_a == cost_b and loc_a < loc_b)


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
        self.xyz = <double*> malloc(m * 3 * sizeof(double))
        self.caps = <uint8_t*> malloc(m)
        self.is_open = <uint8_t*> malloc(m)
        self.capacity = <int32_t*> malloc(m * sizeof(int32_t))
        self.priority = <int32_t*> malloc(m * sizeof(int32_t))
        self.fixed_cost = <double*> malloc(m * sizeof(double))
        self.stamp = <uint32_t*> malloc(m * sizeof(uint32_t))
        self.excl_mark = <uint32_t*> malloc(m * sizeof(uint32_t))
        if (self.excl_mark == NULL or self.xyz == NULL or self.caps == NULL or self.is_open == NULL or self.capacity == NULL
                or self.priority == NULL or self.fixed_cost == NULL or self.stamp == NULL):
            raise MemoryError()
        self.min_fixed = INF if n else 0.0
        for i in range(n):
            self.xyz[3 * i] = xyz[i, 0]
            self.xyz[3 * i + 1] = xyz[i, 1]
            self.xyz[3 * i + 2] = xyz[i, 2]
            self.caps[i] = caps[i]
            self.is_open[i] = is_open[i]
            self.capacity[i] = capacity[i]
            self.priority[i] = priority[i]
            self.fixed_cost[i] = fixed_cost[i]
            if fixed_cost[i] < self.min_fixed:
                self.min_fixed = fixed_cost[i]
        memset(self.stamp, 0, m * sizeof(uint32_t))
        self.stamp_gen = 0
        memset(self.excl_mark, 0, m * sizeof(uint32_t))
        self.excl_gen = 0
        # per-node static lower bounds: a subtree of dear or low-priority
        # locations is skipped sooner than the network-wide minimum would allow
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
                if self.fixed_cost[i] < self.node_min_fixed[node_id]:
                    self.node_min_fixed[node_id] = self.fixed_cost[i]
                if self.priority[i] < self.node_min_priority[node_id]:
                    self.node_min_priority[node_id] = self.priority[i]

    def __dealloc__(self):
        free(self.xyz)
        free(self.caps)
        free(self.is_open)
        free(self.capacity)
        free(self.priority)
        free(self.fixed_cost)
        free(self.stamp)
        free(self.excl_mark)
        free(self.node_min_fixed)
        free(self.node_min_priority)

    def set_open(self, int32_t loc, bint is_open):
        """Open or close a location for routing."""
        self.is_open[loc] = is_open

    def set_capacity(self, int32_t loc, int32_t capacity):
        """Change a location's daily capacity (0 = unlimited)."""
        self.capacity[loc] = capacity

    # -- the pieces of a decision ------------------------------------------------
    cdef int _gate(self, const Query* q, int32_t loc, double km) noexcept nogil:
        # -1 if the location is eligible, else why not (a Reject code)
        cdef int32_t cap
        if not self.is_open[loc]:
            return REJ_CLOSED
        if self.excl_mark[loc] == q.excl_gen:
            return REJ_EXCLUDED
        if loc != q.pickup_loc and (self.caps[loc] & q.need_cap) != q.need_cap:
            return REJ_CAPABILITY
        cap = self.capacity[loc]
        if cap > 0 and self.ledger.held_shipments[loc] + self.ledger.confirmed_today[loc] >= cap:
            return REJ_CAPACITY
        if km > q.max_km:
            return REJ_DISTANCE
        return -1

    cdef void _costs(self, const PolicyC* pol, int32_t loc, double km, double low_sum, bint extra,
                            Costs* out) noexcept nogil:
        cdef int32_t cap = self.capacity[loc]
        out.fixed = self.fixed_cost[loc] + (pol.split_penalty if extra else 0.0)
        out.distance = pol.per_km * km
        out.low_stock = pol.low_stock_weight * low_sum
        if cap > 0:
            out.load = pol.load_weight * (
                <double> (self.ledger.held_shipments[loc] + self.ledger.confirmed_today[loc]) / cap)
        else:
            out.load = 0.0
        out.priority = pol.priority_weight * self.priority[loc]
        out.total = out.fixed + out.distance + out.low_stock + out.load + out.priority

    cdef double _base(self, const PolicyC* pol, int32_t loc, double km, bint extra) noexcept nogil:
        # the cost without the stock-dependent part: a lower bound for this location
        cdef Costs c
        self._costs(pol, loc, km, 0.0, extra, &c)
        return c.total

    cdef double _node_lb(self, const PolicyC* pol, const Query* q, int node_id, bint extra,
                                double* km_lb) noexcept nogil:
        km_lb[0] = chord_sq_to_km_lb(box_chord_sq(&self.index.nodes[node_id], q.dest))
        return (self.node_min_fixed[node_id] + (pol.split_penalty if extra else 0.0) + pol.per_km * km_lb[0]
                + pol.priority_weight * self.node_min_priority[node_id])

    # single location --------------------------------------------------------
    cdef void _consider_single(self, const PolicyC* pol, const Query* q, int32_t loc, Singles* best,
                               Stats* st) noexcept nogil:
        cdef double c2 = chord_sq(&self.xyz[3 * loc], q.dest)
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
            c = self.ledger.find(loc, q.sku[i])
            a = cell_available(&self.ledger.cells[c]) if c >= 0 else 0
            if a < q.qty[i]:
                st.rejected[<int> REJ_NO_STOCK] += 1
                return
            avail[i] = a
        for i in range(q.n_lines):      # summed in line order, as the reference does
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
        cdef int i, rarest = 0, top, node_id
        cdef int32_t c
        cdef double lb, km_lb
        cdef int stack[KD_STACK]
        cdef KdNode* node
        best.n = 0
        for i in range(1, q.n_lines):
            if self.ledger.sku_count[q.sku[i]] < self.ledger.sku_count[q.sku[rarest]]:
                rarest = i
        if self.ledger.sku_count[q.sku[rarest]] <= SCAN_LIMIT:
            # whoever fills everything holds the rarest SKU: scan its few cells
            st.strategy = 1
            c = self.ledger.sku_head[q.sku[rarest]]
            while c >= 0:
                self._consider_single(pol, q, self.ledger.cells[c].loc, best, st)
                c = self.ledger.cells[c].next
            return
        st.strategy = 0
        if self.n == 0:
            return
        stack[0] = 0
        top = 1
        while top:
            top -= 1
            node_id = stack[top]
            node = &self.index.nodes[node_id]
            lb = self._node_lb(pol, q, node_id, False, &km_lb)
            if km_lb > q.max_km + EPS:
                continue
            if best.n > 0 and lb > best.cost[0].total + EPS:
                continue
            if node.left < 0:
                # overlap the leaf's hash misses: prefetch every slot of its rarest line first
                for i in range(node.start, node.end):
                    self.ledger.prefetch(self.index.perm[i], q.sku[q.check_order[0]])
                for i in range(node.start, node.end):
                    self.ledger.prefetch_cell(self.index.perm[i], q.sku[q.check_order[0]])
                for i in range(node.start, node.end):
                    self._consider_single(pol, q, self.index.perm[i], best, st)
            else:
                self._push_children(q, node, stack, &top)

    cdef void _push_children(self, const Query* q, const KdNode* node, int* stack, int* top) noexcept nogil:
        # push the farther child first so the nearer one is walked first
        cdef double dl = box_chord_sq(&self.index.nodes[node.left], q.dest)
        cdef double dr = box_chord_sq(&self.index.nodes[node.right], q.dest)
        if dl <= dr:
            stack[top[0]] = node.right
            stack[top[0] + 1] = node.left
        else:
            stack[top[0]] = node.left
            stack[top[0] + 1] = node.right
        top[0] += 2

    # one greedy split step ------------------------------------------------------
    cdef void _consider_step(self, const PolicyC* pol, const Query* q, int32_t loc, Plan* plan,
                             int64_t rem_units, double* best_ratio, int32_t* best_loc, double* best_km,
                             Costs* best_cost, int32_t* best_take) noexcept nogil:
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
        c2 = chord_sq(&self.xyz[3 * loc], q.dest)
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
            c = self.ledger.find(loc, q.sku[i])
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
        cdef int i, top, node_id
        cdef int64_t rem_units = 0, listed = 0
        cdef int32_t c, loc, best_loc = -1
        cdef double best_ratio = INF, best_km = 0.0, lb, km_lb
        cdef Costs best_cost
        cdef int32_t best_take[MAX_LINES]
        cdef int stack[KD_STACK]
        cdef KdNode* node
        cdef bint extra = plan.n_ship > 0
        for i in range(q.n_lines):
            if plan.remaining[i] > 0:
                rem_units += plan.remaining[i]
                listed += self.ledger.sku_count[q.sku[i]]
        if listed <= SCAN_LIMIT:
            # a useful location holds one of the remaining SKUs: scan their cells once each
            self.stamp_gen += 1
            if self.stamp_gen == 0:     # wrapped: clear the marks
                memset(self.stamp, 0, max(self.n, 1) * sizeof(uint32_t))
                self.stamp_gen = 1
            for i in range(q.n_lines):
                if plan.remaining[i] == 0:
                    continue
                c = self.ledger.sku_head[q.sku[i]]
                while c >= 0:
                    loc = self.ledger.cells[c].loc
                    if self.stamp[loc] != self.stamp_gen:
                        self.stamp[loc] = self.stamp_gen
                        self._consider_step(pol, q, loc, plan, rem_units, &best_ratio, &best_loc, &best_km,
                                            &best_cost, best_take)
                    c = self.ledger.cells[c].next
        elif self.n > 0:
            stack[0] = 0
            top = 1
            while top:
                top -= 1
                node_id = stack[top]
                node = &self.index.nodes[node_id]
                lb = self._node_lb(pol, q, node_id, extra, &km_lb)
                if km_lb > q.max_km + EPS:
                    continue
                if best_loc >= 0 and lb / rem_units > best_ratio + EPS:
                    continue
                if (lb - (pol.split_penalty if extra else 0.0)) + self.min_fixed + pol.split_penalty > q.split_cap + EPS:
                    continue
                if node.left < 0:
                    for i in range(node.start, node.end):
                        self._consider_step(pol, q, self.index.perm[i], plan, rem_units, &best_ratio, &best_loc,
                                            &best_km, &best_cost, best_take)
                else:
                    self._push_children(q, node, stack, &top)
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

    cdef int _route_one(self, const PolicyC* pol, Query* q, bint hold, Singles* best, Plan* plan, Stats* st,
                        int64_t* cells, int* split_reason) noexcept nogil:
        # One order, its Query filled in: the cheapest single location, a split when none fills it or when
        # splitting is strictly cheaper, and (hold) the holds. 0 = a full plan, 1 = unfulfillable, 2 = error.
        cdef int i, status = 0, n_lines = q.n_lines
        cdef bint use_split = False, run_split, complete
        split_reason[0] = 0
        self._search_single(pol, q, best, st)
        run_split = best.n == 0 or (
            q.max_shipments > 1 and best.cost[0].total > 2.0 * self.min_fixed + pol.split_penalty)
        plan.n_ship = 0
        if run_split:
            q.split_cap = best.cost[0].total if best.n > 0 else INF
            self._split(pol, q, plan)
            complete = True
            for i in range(n_lines):
                if plan.remaining[i] > 0:
                    complete = False
            if complete:
                # a complete split wins if there is no single location, or if it is strictly cheaper
                if best.n == 0:
                    use_split = True
                    split_reason[0] = 1
                elif plan.n_ship > 1 and plan.total < best.cost[0].total:
                    use_split = True
                    split_reason[0] = 2
        if not use_split:
            if best.n > 0:
                plan.n_ship = 1
                plan.loc[0] = best.loc[0]
                plan.km[0] = best.km[0]
                plan.cost[0] = best.cost[0]
                plan.total = best.cost[0].total
                for i in range(n_lines):
                    plan.take[0][i] = q.qty[i]
                    plan.remaining[i] = 0
            else:
                status = 1
        if status == 0 and hold:
            if self._hold_plan(q, plan, cells) != ST_OK:
                status = 2
        return status

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
            memset(self.excl_mark, 0, max(self.n, 1) * sizeof(uint32_t))
            self.excl_gen = 1
        for i in range(n_ex):
            loc = excluded[i]
            if loc < 0 or loc >= self.n:
                raise ValueError("excluded location out of range")
            self.excl_mark[loc] = self.excl_gen
        q.excl_gen = self.excl_gen
        q.n_lines = n_lines
        _order_by_rarity(&q, self.ledger.sku_count)
        q.pickup_loc = pickup_loc
        q.need_cap = <uint8_t> need_cap
        q.max_km = max_km
        q.max_shipments = max(1, min(max_shipments, MAX_SHIPMENTS))
        memset(&st, 0, sizeof(Stats))
        with nogil:
            if pickup_loc >= 0:
                q.dest[0] = self.xyz[3 * pickup_loc]
                q.dest[1] = self.xyz[3 * pickup_loc + 1]
                q.dest[2] = self.xyz[3 * pickup_loc + 2]
            else:
                unit_vector(lat, lon, q.dest)
            status = self._route_one(&pol.p, &q, hold, &best, &plan, &st, cells, &split_reason)
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
                tuple([st.rejected[i] for i in range(N_REJECT)]), singles, st.strategy, split_reason)

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
            memset(self.excl_mark, 0, max(self.n, 1) * sizeof(uint32_t))
            self.excl_gen = 1
        with nogil:
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
                memset(&st, 0, sizeof(Stats))
                unit_vector(lat[i], lon[i], q.dest)
                code = self._route_one(&pol.p, &q, True, &best, &plan, &st, cells, &reason)
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
        cdef double c2 = chord_sq(&self.xyz[3 * loc], q.dest)
        cdef int i, j
        cdef int64_t c
        if c2 > radius_c2 or not self.is_open[loc] or (self.caps[loc] & need_cap) != need_cap:
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

# cython: language_level=3
"""The stock ledger: sparse (location, SKU) cells, native and allocation-light.

See ledger.pxd for the layout. Everything here returns a ``Status``; the Python
layer turns it into an exception in one place (``pyomni._core.check_status``).
"""

import numpy as np

from libc.stdlib cimport malloc, realloc, free
from libc.string cimport memset
from libc.stdint cimport int8_t, int32_t, int64_t, uint8_t, uint32_t, uint64_t
from pyomni._core.status cimport *

cdef uint64_t _MIN_SLOTS = 1024


cdef inline uint64_t _slot_of(int32_t loc, int32_t sku, uint64_t n_slots) noexcept nogil:
    # Fibonacci hashing of the packed key, then Lemire's range reduction of the
    # well-mixed high 32 bits onto [0, n_slots): any table size works, so the
    # table can be sized to the load factor instead of the next power of two.
    cdef uint64_t key = ((<uint64_t> <uint32_t> loc) << 32) | (<uint64_t> <uint32_t> sku)
    cdef uint64_t h = (key * <uint64_t> 11400714819323198485ULL) >> 32
    return (h * n_slots) >> 32


cdef inline uint8_t _tag_of(int32_t loc, int32_t sku) noexcept nogil:
    # bits 24..31 of the same product: independent of the slot position (bits 32..63)
    cdef uint64_t key = ((<uint64_t> <uint32_t> loc) << 32) | (<uint64_t> <uint32_t> sku)
    return <uint8_t> ((key * <uint64_t> 11400714819323198485ULL) >> 24)


cdef inline uint64_t _next(uint64_t h, uint64_t n_slots) noexcept nogil:
    h += 1
    return 0 if h == n_slots else h


ctypedef struct Undo:
    int64_t cell
    int32_t on_hand
    int32_t safety


cdef class Ledger:
    """Native stock ledger for ``n_locations`` x ``n_skus`` (sparse).

    Parameters
    ----------
    n_locations, n_skus : int
        Dense index ranges; callers intern external ids to these indices.
    expected_cells : int, optional
        Capacity to reserve up front (avoids regrowth during a bulk load).
    """

    def __cinit__(self, int32_t n_locations, int32_t n_skus, int64_t expected_cells=0):
        if n_locations < 0 or n_skus < 0:
            raise ValueError("sizes must be >= 0")
        self.n_locations = n_locations
        self.n_skus = 0
        self.cells = NULL
        self.n_cells = 0
        self.cap_cells = 0
        self.slots = NULL
        self.tags = NULL
        self.n_slots = 0
        self.sku_head = NULL
        self.sku_count = NULL
        self.sku_on_hand = NULL
        self.sku_reserved = NULL
        self.sku_available = NULL
        self.sku_version = NULL
        self.version = 0
        self.drops = 0
        self.raise_cap = 8192
        self.n_raised = 0
        self.raise_overflow = False
        self.raise_log = <int32_t*> malloc(self.raise_cap * sizeof(int32_t))
        self.cap_skus = 0
        self.held_shipments = <int32_t*> malloc(max(n_locations, 1) * sizeof(int32_t))
        self.confirmed_today = <int32_t*> malloc(max(n_locations, 1) * sizeof(int32_t))
        if self.held_shipments == NULL or self.confirmed_today == NULL or self.raise_log == NULL:
            raise MemoryError()
        memset(self.held_shipments, 0, max(n_locations, 1) * sizeof(int32_t))
        memset(self.confirmed_today, 0, max(n_locations, 1) * sizeof(int32_t))
        if self._rehash(_MIN_SLOTS) != ST_OK:
            raise MemoryError()
        if self.add_skus(n_skus) != ST_OK or self.reserve(expected_cells) != ST_OK:
            raise MemoryError()

    def __dealloc__(self):
        free(self.cells)
        free(self.slots)
        free(self.tags)
        free(self.sku_head)
        free(self.sku_count)
        free(self.sku_on_hand)
        free(self.sku_reserved)
        free(self.sku_available)
        free(self.sku_version)
        free(self.held_shipments)
        free(self.confirmed_today)
        free(self.raise_log)

    # -- growth --------------------------------------------------------------
    def add_skus(self, int32_t n_new):
        """Extend the SKU index range by ``n_new`` (new SKUs have no cells). Returns a status."""
        cdef int64_t need = <int64_t> self.n_skus + n_new
        cdef int64_t cap, i
        if n_new < 0 or need > 2147483647:
            return ST_INVALID_QUANTITY
        if need > self.cap_skus:
            cap = max(need, self.cap_skus + self.cap_skus // 2, 16)
            if (_realloc_into(<void**> &self.sku_head, cap * sizeof(int32_t))
                    or _realloc_into(<void**> &self.sku_count, cap * sizeof(int32_t))
                    or _realloc_into(<void**> &self.sku_on_hand, cap * sizeof(int64_t))
                    or _realloc_into(<void**> &self.sku_reserved, cap * sizeof(int64_t))
                    or _realloc_into(<void**> &self.sku_available, cap * sizeof(int64_t))
                    or _realloc_into(<void**> &self.sku_version, cap * sizeof(uint64_t))):
                return ST_NO_MEMORY
            self.cap_skus = cap
        for i in range(self.n_skus, need):
            self.sku_head[i] = -1
            self.sku_count[i] = 0
            self.sku_on_hand[i] = 0
            self.sku_reserved[i] = 0
            self.sku_available[i] = 0
            self.sku_version[i] = 0
        self.n_skus = <int32_t> need
        return ST_OK

    cdef Status reserve(self, int64_t n_cells) noexcept nogil:
        # Make room for ``n_cells`` cells in total without further regrowth.
        if n_cells > self.cap_cells:
            if self._grow_cells(n_cells) != ST_OK:
                return ST_NO_MEMORY
        if <uint64_t> n_cells * 4 > self.n_slots * 3:
            return self._rehash(<uint64_t> (n_cells * 4) // 3 + 1)
        return ST_OK

    cdef Status _grow_cells(self, int64_t need) noexcept nogil:
        # Grow by 1/16: realloc of a large block is a page remap, so small steps
        # cost little and keep the slack (bytes per cell) low.
        cdef int64_t cap = self.cap_cells + self.cap_cells // 16
        if cap < need:
            cap = need
        if cap < 64:
            cap = 64
        if cap > 2147483647:
            if need > 2147483647:
                return ST_NO_MEMORY
            cap = 2147483647
        cdef Cell* p = <Cell*> realloc(self.cells, cap * sizeof(Cell))
        if p == NULL:
            return ST_NO_MEMORY
        self.cells = p
        self.cap_cells = cap
        return ST_OK

    cdef Status _rehash(self, uint64_t n_slots) noexcept nogil:
        cdef int32_t* slots
        cdef uint8_t* tags
        cdef uint64_t h
        cdef int64_t c
        if n_slots < _MIN_SLOTS:
            n_slots = _MIN_SLOTS
        if n_slots >= (<uint64_t> 1) << 32:
            return ST_NO_MEMORY
        slots = <int32_t*> malloc(n_slots * sizeof(int32_t))
        tags = <uint8_t*> malloc(n_slots)
        if slots == NULL or tags == NULL:
            free(slots)
            free(tags)
            return ST_NO_MEMORY
        memset(slots, 0xFF, n_slots * sizeof(int32_t))     # -1 everywhere
        for c in range(self.n_cells):
            h = _slot_of(self.cells[c].loc, self.cells[c].sku, n_slots)
            while slots[h] >= 0:
                h = _next(h, n_slots)
            slots[h] = <int32_t> c
            tags[h] = _tag_of(self.cells[c].loc, self.cells[c].sku)
        free(self.slots)
        free(self.tags)
        self.slots = slots
        self.tags = tags
        self.n_slots = n_slots
        return ST_OK

    # -- cells ---------------------------------------------------------------
    cdef int64_t find(self, int32_t loc, int32_t sku) noexcept nogil:
        cdef uint64_t h = _slot_of(loc, sku, self.n_slots)
        cdef uint8_t tag = _tag_of(loc, sku)
        cdef int32_t c
        while True:
            c = self.slots[h]
            if c < 0:
                return -1
            # the tag check keeps a miss from touching (and cache-missing on) other cells
            if self.tags[h] == tag and self.cells[c].sku == sku and self.cells[c].loc == loc:
                return c
            h = _next(h, self.n_slots)

    cdef void prefetch(self, int32_t loc, int32_t sku) noexcept nogil:
        # Start loading the slot and tag a coming find() will read, so several
        # lookups' cache misses overlap instead of queueing one after another.
        cdef uint64_t h = _slot_of(loc, sku, self.n_slots)
        __builtin_prefetch(&self.slots[h])
        __builtin_prefetch(&self.tags[h])

    cdef void prefetch_cell(self, int32_t loc, int32_t sku) noexcept nogil:
        # Second stage (once the slots are in cache): start loading the cell the
        # first tag match points at; reads no cell itself.
        cdef uint64_t h = _slot_of(loc, sku, self.n_slots)
        cdef uint8_t tag = _tag_of(loc, sku)
        cdef int32_t c
        while True:
            c = self.slots[h]
            if c < 0:
                return
            if self.tags[h] == tag:
                __builtin_prefetch(&self.cells[c])
                return
            h = _next(h, self.n_slots)

    cdef Status find_or_insert(self, int32_t loc, int32_t sku, int64_t* out) noexcept nogil:
        cdef int64_t c = self.find(loc, sku)
        cdef uint64_t h
        if c >= 0:
            out[0] = c
            return ST_OK
        if self.n_cells + 1 > self.cap_cells:
            if self._grow_cells(self.n_cells + 1) != ST_OK:
                return ST_NO_MEMORY
        if <uint64_t> (self.n_cells + 1) * 4 > self.n_slots * 3:
            # past 3/4 full: regrow to 5/8 full (probes stay short, slots stay ~6.4 bytes a cell)
            if self._rehash(<uint64_t> (self.n_cells + 1) * 8 // 5) != ST_OK:
                return ST_NO_MEMORY
        c = self.n_cells
        self.cells[c].on_hand = 0
        self.cells[c].reserved = 0
        self.cells[c].safety = 0
        self.cells[c].loc = loc
        self.cells[c].sku = sku
        self.cells[c].next = self.sku_head[sku]
        self.sku_head[sku] = <int32_t> c
        self.sku_count[sku] += 1
        h = _slot_of(loc, sku, self.n_slots)
        while self.slots[h] >= 0:
            h = _next(h, self.n_slots)
        self.slots[h] = <int32_t> c
        self.tags[h] = _tag_of(loc, sku)
        self.n_cells += 1
        out[0] = c
        return ST_OK

    cdef void _drop_last_cell(self) noexcept nogil:
        # Undo the most recent insertion (bulk-event rollback). The cell is the
        # head of its SKU's list because cells are prepended and dropped in
        # reverse order. Linear-probing delete by backward shift, no tombstones.
        cdef int64_t c = self.n_cells - 1
        cdef Cell* cell = &self.cells[c]
        cdef uint64_t i = _slot_of(cell.loc, cell.sku, self.n_slots), j, k
        while self.slots[i] != c:
            i = _next(i, self.n_slots)
        j = i
        while True:
            j = _next(j, self.n_slots)
            if self.slots[j] < 0:
                break
            k = _slot_of(self.cells[self.slots[j]].loc, self.cells[self.slots[j]].sku, self.n_slots)
            # keep slot j where it is if its home k lies cyclically in (i, j]
            if (i <= j and i < k and k <= j) or (i > j and (i < k or k <= j)):
                continue
            self.slots[i] = self.slots[j]
            self.tags[i] = self.tags[j]
            i = j
        self.slots[i] = -1
        self.sku_head[cell.sku] = cell.next
        self.sku_count[cell.sku] -= 1
        self.n_cells -= 1
        self.drops += 1

    cdef void _write(self, int64_t c, int32_t on_hand, int32_t reserved, int32_t safety) noexcept nogil:
        # The one place cell quantities change, so per-SKU totals never drift.
        cdef Cell* cell = &self.cells[c]
        cdef int32_t before = cell_available(cell)
        self.sku_on_hand[cell.sku] += on_hand - cell.on_hand
        self.sku_reserved[cell.sku] += reserved - cell.reserved
        cell.on_hand = on_hand
        cell.reserved = reserved
        cell.safety = safety
        cdef int32_t after = cell_available(cell)
        self.sku_available[cell.sku] += after - before
        if after > before:
            if self.n_raised < self.raise_cap:
                self.raise_log[self.n_raised] = <int32_t> c
                self.n_raised += 1
            else:
                self.raise_overflow = True
        self.version += 1
        self.sku_version[cell.sku] = self.version

    cdef Status apply_one(self, int32_t loc, int32_t sku, int kind, int64_t qty, int64_t safety) noexcept nogil:
        if loc < 0 or loc >= self.n_locations:
            return ST_UNKNOWN_LOCATION
        if sku < 0 or sku >= self.n_skus:
            return ST_UNKNOWN_SKU
        return self.apply_at(self.find(loc, sku), loc, sku, kind, qty, safety)

    cdef Status apply_at(self, int64_t c, int32_t loc, int32_t sku, int kind, int64_t qty,
                         int64_t safety) noexcept nogil:
        # One event on cell ``c`` (= find(loc, sku), -1 if absent; loc and sku in range).
        # Validate everything first, mutate last: a failed event changes nothing.
        cdef int64_t on_hand, reserved = 0, safe = 0, new_on_hand, new_safety
        on_hand = self.cells[c].on_hand if c >= 0 else 0
        if c >= 0:
            reserved = self.cells[c].reserved
            safe = self.cells[c].safety
        new_safety = safe
        if kind == EV_SET:
            if qty < 0 or qty > MAX_QTY or safety < -1 or safety > MAX_QTY:
                return ST_INVALID_QUANTITY
            new_on_hand = qty
            if safety >= 0:
                new_safety = safety
            if new_on_hand < reserved:
                return ST_STOCK_RESERVED
        elif kind == EV_ADJUST:
            if qty == 0 or qty > MAX_QTY or qty < -MAX_QTY:
                return ST_INVALID_QUANTITY
            new_on_hand = on_hand + qty
            if new_on_hand < 0:
                return ST_INSUFFICIENT_STOCK
            if new_on_hand < reserved:
                return ST_STOCK_RESERVED
        elif kind == EV_RECEIVE or kind == EV_RETURN:
            if qty <= 0 or qty > MAX_QTY:
                return ST_INVALID_QUANTITY
            new_on_hand = on_hand + qty
        elif kind == EV_SALE:
            if qty <= 0 or qty > MAX_QTY:
                return ST_INVALID_QUANTITY
            if on_hand - reserved < qty:
                return ST_INSUFFICIENT_STOCK
            new_on_hand = on_hand - qty
        elif kind == EV_SAFETY:
            if qty < 0 or qty > MAX_QTY:
                return ST_INVALID_QUANTITY
            new_on_hand = on_hand
            new_safety = qty
        else:
            return ST_INVALID_QUANTITY
        if new_on_hand > MAX_QTY:
            return ST_QUANTITY_OVERFLOW
        if c < 0:
            if new_on_hand == 0 and new_safety == 0:
                return ST_OK            # nothing to record; do not create an empty cell
            if self.find_or_insert(loc, sku, &c) != ST_OK:
                return ST_NO_MEMORY
        self._write(c, <int32_t> new_on_hand, <int32_t> reserved, <int32_t> new_safety)
        return ST_OK

    cdef Status hold(self, int64_t c, int32_t qty) noexcept nogil:
        cdef Cell* cell = &self.cells[c]
        if qty <= 0 or qty > cell_available(cell):
            return ST_INSUFFICIENT_STOCK
        self._write(c, cell.on_hand, cell.reserved + qty, cell.safety)
        return ST_OK

    cdef Status unhold(self, int64_t c, int32_t qty) noexcept nogil:
        cdef Cell* cell = &self.cells[c]
        if qty <= 0 or qty > cell.reserved:
            return ST_INVARIANT
        self._write(c, cell.on_hand, cell.reserved - qty, cell.safety)
        return ST_OK

    cdef Status consume(self, int64_t c, int32_t qty) noexcept nogil:
        # a confirmed hold leaves the building: on hand and reserved both drop
        cdef Cell* cell = &self.cells[c]
        if qty <= 0 or qty > cell.reserved:
            return ST_INVARIANT
        self._write(c, cell.on_hand - qty, cell.reserved - qty, cell.safety)
        return ST_OK

    # -- Python-facing commands ----------------------------------------------
    def apply_events(self, const int32_t[::1] loc, const int32_t[::1] sku, const int8_t[::1] kind,
                     const int64_t[::1] qty, const int64_t[::1] safety):
        """Apply a batch of stock events atomically, in order, in one native pass.

        ``safety`` is -1 where not given. Returns ``(status, failed_row)``;
        on failure every event of the batch is rolled back (``failed_row`` is
        the first bad event), on success ``failed_row`` is -1.
        """
        cdef int64_t n = loc.shape[0], i, j, c, n_new = 0
        cdef int64_t start_cells = self.n_cells
        cdef Status st = ST_OK
        cdef Undo* undo
        if sku.shape[0] != n or kind.shape[0] != n or qty.shape[0] != n or safety.shape[0] != n:
            raise ValueError("event columns must have the same length")
        if n == 0:
            return ST_OK, -1
        undo = <Undo*> malloc(n * sizeof(Undo))
        if undo == NULL:
            return ST_NO_MEMORY, 0
        with nogil:
            # Pass 1: find every event's cell once (remembering its "before" for
            # rollback), validate ids, and count the events that need a new cell.
            i = 0
            while i < n:
                if loc[i] < 0 or loc[i] >= self.n_locations:
                    st = ST_UNKNOWN_LOCATION
                    break
                if sku[i] < 0 or sku[i] >= self.n_skus:
                    st = ST_UNKNOWN_SKU
                    break
                c = self.find(loc[i], sku[i])
                undo[i].cell = c
                if c >= 0:
                    undo[i].on_hand = self.cells[c].on_hand
                    undo[i].safety = self.cells[c].safety
                else:
                    n_new += 1
                i += 1
            # Room for the new cells only, so the pass never regrows mid-way and
            # a batch of updates allocates nothing.
            if st == ST_OK and n_new:
                st = self.reserve(self.n_cells + n_new)
                if st != ST_OK:
                    i = 0
            # Pass 2: apply in order. A key first seen as new may have been
            # created by an earlier event of this batch: look it up again.
            if st == ST_OK:
                i = 0
                while i < n:
                    c = undo[i].cell
                    if c < 0:
                        c = self.find(loc[i], sku[i])
                        if c >= 0:      # created earlier in this batch: restore to its value then
                            undo[i].cell = c
                            undo[i].on_hand = self.cells[c].on_hand
                            undo[i].safety = self.cells[c].safety
                    st = self.apply_at(c, loc[i], sku[i], kind[i], qty[i], safety[i])
                    if st != ST_OK:
                        break
                    if undo[i].cell < 0:
                        # a new cell (or none, for a no-op): its "before" was all zero
                        undo[i].cell = self.find(loc[i], sku[i])
                        undo[i].on_hand = 0
                        undo[i].safety = 0
                    i += 1
                if st != ST_OK:
                    j = i - 1
                    while j >= 0:
                        c = undo[j].cell
                        if c >= 0:
                            self._write(c, undo[j].on_hand, self.cells[c].reserved, undo[j].safety)
                        j -= 1
                    while self.n_cells > start_cells:
                        self._drop_last_cell()
            self._shrink()
        free(undo)
        return st, (i if st != ST_OK else -1)

    cdef void _shrink(self) noexcept nogil:
        # give back cell capacity a failed bulk pass reserved (beyond the usual 1/16 growth)
        cdef int64_t keep = self.n_cells + self.n_cells // 16 + 64
        cdef Cell* p
        if self.cap_cells > keep:
            p = <Cell*> realloc(self.cells, keep * sizeof(Cell))
            if p != NULL:
                self.cells = p
                self.cap_cells = keep

    def apply_event(self, int32_t loc, int32_t sku, int kind, int64_t qty, int64_t safety=-1):
        """Apply one stock event; returns a status (nothing changes unless ST_OK)."""
        return self.apply_one(loc, sku, kind, qty, safety)

    def transfer(self, int32_t src, int32_t dst, int32_t sku, int64_t qty):
        """Move ``qty`` unreserved units from ``src`` to ``dst`` atomically; returns a status."""
        cdef int64_t c
        cdef Status st
        if src < 0 or src >= self.n_locations or dst < 0 or dst >= self.n_locations:
            return ST_UNKNOWN_LOCATION
        if sku < 0 or sku >= self.n_skus:
            return ST_UNKNOWN_SKU
        if qty <= 0 or qty > MAX_QTY:
            return ST_INVALID_QUANTITY
        c = self.find(src, sku)
        if c < 0 or self.cells[c].on_hand - self.cells[c].reserved < qty:
            return ST_INSUFFICIENT_STOCK
        c = self.find(dst, sku)
        if (self.cells[c].on_hand if c >= 0 else 0) + qty > MAX_QTY:
            return ST_QUANTITY_OVERFLOW
        if c < 0:
            if self.find_or_insert(dst, sku, &c) != ST_OK:
                return ST_NO_MEMORY
        # both sides validated and the destination cell exists: neither can fail now
        st = self.apply_one(src, sku, EV_SALE, qty, -1)
        if st == ST_OK:
            st = self.apply_one(dst, sku, EV_RECEIVE, qty, -1)
        return st

    def change_holds(self, const int64_t[::1] cells, const int32_t[::1] qty, int op):
        """Hold (op=0), release (op=1) or consume (op=2) quantities on cells, all or nothing.

        Used by reservations; returns a status.
        """
        cdef int64_t n = cells.shape[0], i
        cdef Cell* cell
        if qty.shape[0] != n:
            raise ValueError("cells and qty must have the same length")
        for i in range(n):
            if cells[i] < 0 or cells[i] >= self.n_cells:
                return ST_INVARIANT
            cell = &self.cells[cells[i]]
            if op == 0 and (qty[i] <= 0 or qty[i] > cell_available(cell)):
                return ST_INSUFFICIENT_STOCK
            if op != 0 and (qty[i] <= 0 or qty[i] > cell.reserved):
                return ST_INVARIANT
        # The checks above are per entry; a cell listed twice could still fail
        # below, so apply in order and undo what was done if anything fails.
        i = 0
        cdef Status st = ST_OK
        while i < n:
            if op == 0:
                st = self.hold(cells[i], qty[i])
            elif op == 1:
                st = self.unhold(cells[i], qty[i])
            else:
                st = self.consume(cells[i], qty[i])
            if st != ST_OK:
                break
            i += 1
        if st != ST_OK:
            while i > 0:
                i -= 1
                if op == 0:
                    self.unhold(cells[i], qty[i])
                elif op == 1:
                    self.hold(cells[i], qty[i])
                else:
                    cell = &self.cells[cells[i]]
                    self._write(cells[i], cell.on_hand + qty[i], cell.reserved + qty[i], cell.safety)
        return st

    def add_load(self, int32_t loc, int32_t held_delta, int32_t confirmed_delta):
        """Adjust a location's shipment counters (held now, confirmed today)."""
        if loc < 0 or loc >= self.n_locations:
            return ST_UNKNOWN_LOCATION
        if self.held_shipments[loc] + held_delta < 0 or self.confirmed_today[loc] + confirmed_delta < 0:
            return ST_INVARIANT
        self.held_shipments[loc] += held_delta
        self.confirmed_today[loc] += confirmed_delta
        return ST_OK

    def add_loads(self, const int32_t[::1] loc, int32_t held_delta):
        """``add_load(l, held_delta, 0)`` for every location listed (a location listed twice counts twice),
        all or nothing. Returns a status."""
        cdef int64_t i, n = loc.shape[0]
        for i in range(n):
            if loc[i] < 0 or loc[i] >= self.n_locations:
                return ST_UNKNOWN_LOCATION
        for i in range(n):
            self.held_shipments[loc[i]] += held_delta
        for i in range(n):
            if self.held_shipments[loc[i]] < 0:
                for i in range(n):
                    self.held_shipments[loc[i]] -= held_delta
                return ST_INVARIANT
        return ST_OK

    def cells_of(self, const int32_t[::1] loc, const int32_t[::1] sku):
        """The cell index of every (loc, sku) pair (-1 where there is none), as an int64 array."""
        cdef int64_t i, n = loc.shape[0]
        if sku.shape[0] != n:
            raise ValueError("loc and sku must have the same length")
        out = np.empty(n, dtype=np.int64)
        cdef int64_t[::1] o = out
        for i in range(n):
            o[i] = self.find(loc[i], sku[i]) if 0 <= loc[i] < self.n_locations and 0 <= sku[i] < self.n_skus else -1
        return out

    def new_day(self):
        """Start a new business day: confirmed shipments stop counting toward capacity."""
        memset(self.confirmed_today, 0, max(self.n_locations, 1) * sizeof(int32_t))

    # -- queries ---------------------------------------------------------------
    def cell(self, int32_t loc, int32_t sku):
        """``(on_hand, reserved, safety)`` of a cell, or ``None`` if it has never held stock."""
        cdef int64_t c
        if loc < 0 or loc >= self.n_locations or sku < 0 or sku >= self.n_skus:
            return None
        c = self.find(loc, sku)
        if c < 0:
            return None
        return (self.cells[c].on_hand, self.cells[c].reserved, self.cells[c].safety)

    def cell_index(self, int32_t loc, int32_t sku):
        """Index of a cell, or -1."""
        if loc < 0 or loc >= self.n_locations or sku < 0 or sku >= self.n_skus:
            return -1
        return self.find(loc, sku)

    def sku_totals(self, int32_t sku):
        """``(on_hand, reserved, available, n_cells)`` of a SKU over the whole network."""
        if sku < 0 or sku >= self.n_skus:
            raise IndexError(sku)
        return (self.sku_on_hand[sku], self.sku_reserved[sku], self.sku_available[sku], self.sku_count[sku])

    def sku_available_array(self):
        """Network-wide available-to-sell of every SKU (int64 array, a copy)."""
        out = np.empty(self.n_skus, dtype=np.int64)
        cdef int64_t[::1] o = out
        cdef int64_t i
        for i in range(self.n_skus):
            o[i] = self.sku_available[i]
        return out

    def changed_skus(self, uint64_t since):
        """SKUs with a cell changed after ledger version ``since`` (int32 array), and the version now."""
        cdef int64_t i, n = 0
        for i in range(self.n_skus):
            if self.sku_version[i] > since:
                n += 1
        out = np.empty(n, dtype=np.int32)
        cdef int32_t[::1] o = out
        n = 0
        for i in range(self.n_skus):
            if self.sku_version[i] > since:
                o[n] = <int32_t> i
                n += 1
        return out, self.version

    def sku_cells(self, int32_t sku):
        """Arrays ``(loc, on_hand, reserved, safety)`` of every cell of one SKU."""
        if sku < 0 or sku >= self.n_skus:
            raise IndexError(sku)
        cdef int64_t n = self.sku_count[sku], k = 0
        cdef int32_t c = self.sku_head[sku]
        loc = np.empty(n, dtype=np.int32)
        on_hand = np.empty(n, dtype=np.int32)
        reserved = np.empty(n, dtype=np.int32)
        safety = np.empty(n, dtype=np.int32)
        cdef int32_t[::1] l = loc, o = on_hand, r = reserved, s = safety
        while c >= 0:
            l[k] = self.cells[c].loc
            o[k] = self.cells[c].on_hand
            r[k] = self.cells[c].reserved
            s[k] = self.cells[c].safety
            k += 1
            c = self.cells[c].next
        return loc, on_hand, reserved, safety

    def export(self):
        """Arrays ``(loc, sku, on_hand, reserved, safety)`` of every cell, in cell order."""
        cdef int64_t n = self.n_cells, c
        loc = np.empty(n, dtype=np.int32)
        sku = np.empty(n, dtype=np.int32)
        on_hand = np.empty(n, dtype=np.int32)
        reserved = np.empty(n, dtype=np.int32)
        safety = np.empty(n, dtype=np.int32)
        cdef int32_t[::1] l = loc, k = sku, o = on_hand, r = reserved, s = safety
        with nogil:
            for c in range(n):
                l[c] = self.cells[c].loc
                k[c] = self.cells[c].sku
                o[c] = self.cells[c].on_hand
                r[c] = self.cells[c].reserved
                s[c] = self.cells[c].safety
        return loc, sku, on_hand, reserved, safety

    def loads(self):
        """Arrays ``(held_shipments, confirmed_today)`` per location (copies)."""
        held = np.empty(self.n_locations, dtype=np.int32)
        conf = np.empty(self.n_locations, dtype=np.int32)
        cdef int32_t[::1] h = held, f = conf
        cdef int32_t i
        for i in range(self.n_locations):
            h[i] = self.held_shipments[i]
            f[i] = self.confirmed_today[i]
        return held, conf

    def memory_bytes(self):
        """Bytes held by the ledger's native arrays."""
        return (self.cap_cells * sizeof(Cell) + self.n_slots * (sizeof(int32_t) + sizeof(uint8_t))
                + self.cap_skus * (2 * sizeof(int32_t) + 3 * sizeof(int64_t))
                + 2 * max(self.n_locations, 1) * sizeof(int32_t))

    def cell_bytes(self):
        """Bytes of the per-cell structures (cells, hash slots and tags) per stored cell."""
        if self.n_cells == 0:
            return 0.0
        return ((self.cap_cells * sizeof(Cell) + self.n_slots * (sizeof(int32_t) + sizeof(uint8_t)))
                / <double> self.n_cells)

    def check_invariants(self):
        """Verify every cell and every aggregate; returns ``(status, message)``."""
        cdef int64_t c, s, n
        cdef int32_t k
        cdef Cell* cell
        for c in range(self.n_cells):
            cell = &self.cells[c]
            if not (0 <= cell.reserved <= cell.on_hand <= MAX_QTY) or cell.safety < 0:
                return ST_INVARIANT, f"cell {c}: on_hand={cell.on_hand} reserved={cell.reserved} safety={cell.safety}"
            if self.find(cell.loc, cell.sku) != c:
                return ST_INVARIANT, f"cell {c} not found by its key"
        sums = {}
        for s in range(self.n_skus):
            n = 0
            oh = 0
            rs = 0
            av = 0
            k = self.sku_head[s]
            while k >= 0:
                if self.cells[k].sku != s:
                    return ST_INVARIANT, f"cell {k} on the list of SKU {s}"
                n += 1
                oh += self.cells[k].on_hand
                rs += self.cells[k].reserved
                av += cell_available(&self.cells[k])
                k = self.cells[k].next
            if (n != self.sku_count[s] or oh != self.sku_on_hand[s] or rs != self.sku_reserved[s]
                    or av != self.sku_available[s]):
                return ST_INVARIANT, f"SKU {s} totals drifted"
        for k in range(self.n_locations):
            if self.held_shipments[k] < 0 or self.confirmed_today[k] < 0:
                return ST_INVARIANT, f"location {k} load counters negative"
        return ST_OK, ""


cdef int _realloc_into(void** p, size_t size) noexcept:
    cdef void* q = realloc(p[0], size)
    if q == NULL:
        return 1
    p[0] = q
    return 0

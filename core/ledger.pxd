# The stock ledger (declarations).
#
# One ``Cell`` per (location, SKU) that ever had stock: 24 bytes, in one array
# that only grows (a cell index, once handed out, stays valid for the life of
# the ledger: reservations keep them). An open-addressing hash of int32 slots
# finds a cell from (location, SKU); each SKU's cells form a linked list through
# ``Cell.next`` so "where is this SKU" never scans other SKUs. Per-SKU totals
# (on hand, reserved, available-to-sell) are kept up to date by the one write
# path, ``_write``, which every mutation goes through.
#
# Memory: 24 bytes a cell plus 5 / load-factor bytes of hash slots and tags. A bulk load
# sizes the table to a load of 3/4 (6.7 bytes a cell); single inserts regrow it
# to 5/8 whenever it passes 3/4 (6.7 to 8 bytes a cell), and the cell array
# grows by 1/16 at a time: a loaded ledger is ~31 bytes a cell.

from libc.stdint cimport int8_t, int32_t, int64_t, uint8_t, uint64_t
from pyomni._core.status cimport Status
cimport cython

ctypedef struct Cell:
    int32_t on_hand
    int32_t reserved
    int32_t safety
    int32_t loc
    int32_t sku
    int32_t next        # next cell of the same SKU, -1 at the end

cdef enum EventKind:
    EV_SET = 0          # on_hand = qty (and safety = safety when given)
    EV_ADJUST = 1       # on_hand += qty (signed)
    EV_RECEIVE = 2      # on_hand += qty, qty > 0
    EV_SALE = 3         # on_hand -= qty, qty > 0; may sell into safety, never into reserved
    EV_RETURN = 4       # on_hand += qty, qty > 0 (returns are accepted anywhere)
    EV_SAFETY = 5       # safety = qty, qty >= 0

cdef extern from *:
    void __builtin_prefetch(const void* addr) nogil


cdef inline int32_t cell_available(const Cell* c) noexcept nogil:
    # what online channels may sell: on_hand - reserved - safety, never below 0
    cdef int32_t a = c.on_hand - c.reserved - c.safety
    return a if a > 0 else 0


@cython.final
cdef class Ledger:
    cdef readonly int32_t n_locations
    cdef readonly int32_t n_skus
    cdef Cell* cells
    cdef readonly int64_t n_cells
    cdef int64_t cap_cells
    cdef int32_t* slots             # cell index or -1
    cdef uint8_t* tags              # 8 more hash bits per slot: a probe reads a cell only on a tag match
    cdef uint64_t n_slots           # any size < 2**32: slots are picked by range reduction, not a mask
    cdef int32_t* sku_head
    cdef int32_t* sku_count         # cells per SKU
    cdef int64_t* sku_on_hand
    cdef int64_t* sku_reserved
    cdef int64_t* sku_available     # sum of cell_available over the SKU's cells
    cdef int64_t cap_skus
    cdef uint64_t* sku_version      # per SKU: the ledger version of its last cell change (feeds ask what changed)
    cdef readonly uint64_t version  # counts cell changes
    cdef readonly uint64_t drops    # counts dropped cells (a rollback): cell indices may have been reused
    # cells whose available-to-sell rose since a router last drained the log (a raise can loosen a bound a
    # router keeps; a fall never can); past raise_cap entries only raise_overflow says so
    cdef int32_t* raise_log
    cdef int32_t raise_cap
    cdef int32_t n_raised
    cdef bint raise_overflow
    cdef int32_t* held_shipments    # per location: shipments currently HELD
    cdef int32_t* confirmed_today   # per location: shipments confirmed since new_day()

    cdef int64_t find(self, int32_t loc, int32_t sku) noexcept nogil
    cdef void prefetch(self, int32_t loc, int32_t sku) noexcept nogil
    cdef void prefetch_cell(self, int32_t loc, int32_t sku) noexcept nogil
    cdef Status find_or_insert(self, int32_t loc, int32_t sku, int64_t* out) noexcept nogil
    cdef void _write(self, int64_t c, int32_t on_hand, int32_t reserved, int32_t safety) noexcept nogil
    cdef Status apply_one(self, int32_t loc, int32_t sku, int kind, int64_t qty, int64_t safety) noexcept nogil
    cdef Status apply_at(self, int64_t c, int32_t loc, int32_t sku, int kind, int64_t qty, int64_t safety) noexcept nogil
    cdef Status hold(self, int64_t c, int32_t qty) noexcept nogil
    cdef Status unhold(self, int64_t c, int32_t qty) noexcept nogil
    cdef Status consume(self, int64_t c, int32_t qty) noexcept nogil
    cdef Status reserve(self, int64_t n_cells) noexcept nogil
    cdef Status _grow_cells(self, int64_t need) noexcept nogil
    cdef Status _rehash(self, uint64_t n_slots) noexcept nogil
    cdef void _drop_last_cell(self) noexcept nogil
    cdef void _shrink(self) noexcept nogil

# Status codes returned by every native command (declaration only).
#
# Kernels never raise: they return one of these, and ``pyomni._core.check_status``
# is the single place that turns a non-OK code into the matching
# ``pyomni.errors`` class. ``tests/test_errors.py`` proves that mapping total and
# one-to-one. Never renumber: the values cross the module boundary.

cdef enum Status:
    ST_OK = 0
    ST_INVALID_QUANTITY = 1     # zero/negative where positive is needed, or > MAX_QTY
    ST_INSUFFICIENT_STOCK = 2   # sale/transfer larger than the unreserved on-hand
    ST_STOCK_RESERVED = 3       # on-hand would drop below what is reserved
    ST_QUANTITY_OVERFLOW = 4    # on-hand would exceed MAX_QTY
    ST_UNKNOWN_LOCATION = 5     # location index out of range
    ST_UNKNOWN_SKU = 6          # SKU index out of range
    ST_NO_MEMORY = 7            # allocation failed; nothing was changed
    ST_INVARIANT = 8            # an internal invariant does not hold (a bug)
    ST_SOLD_OUT = 9             # a flash sale's global quota is short of the claim
    ST_STORE_QUOTA = 10         # the store's quota is short (or every store in reach is)
    ST_CUSTOMER_LIMIT = 11      # the customer would pass the sale's per-customer limit

cdef enum:
    # Largest quantity a cell, an event or a line may carry; fits int32 with headroom
    # so that on_hand + qty never overflows before it is checked.
    MAX_QTY = 1000000000

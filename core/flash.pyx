# cython: freethreading_compatible = False
"""Flash-sale claims, decided or applied in one native pass over a batch.

``claim_batch`` is the compiled twin of :func:`pyomni.flash.claim_pass` (read
that one first: same order of checks, same state changes, and a parity test
holds the two together). A batch is decided under the engine's lock without
changing anything (scratch copies of the quota arrays, the ledger read only),
then applied with the stores it chose -- the same code, so live and replay
agree. The GIL is released for the loop.
"""

from libc.stdint cimport int32_t, int64_t, uint8_t
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy
from pyomni._core.ledger cimport Ledger, Cell, cell_available
from pyomni._core.status cimport Status, ST_OK, ST_INSUFFICIENT_STOCK, ST_INVARIANT, ST_NO_MEMORY, \
    ST_SOLD_OUT, ST_STORE_QUOTA, ST_CUSTOMER_LIMIT


cdef inline int32_t _free_units(Ledger ledger, ClaimState* st, int k) noexcept nogil:
    cdef int64_t c
    if st.free[k] < 0:
        c = ledger.find(st.store_loc[k // st.n_sku], st.sku_idx[k % st.n_sku])
        st.free[k] = cell_available(&ledger.cells[c]) if c >= 0 else 0
    return st.free[k]


cdef inline Status _change(Ledger ledger, ClaimState* st, int k, int32_t qty, bint hold) noexcept nogil:
    cdef int64_t c = ledger.find(st.store_loc[k // st.n_sku], st.sku_idx[k % st.n_sku])
    if c < 0:
        return ST_INVARIANT
    return ledger.hold(c, qty) if hold else ledger.unhold(c, qty)


cdef inline Status _give_back(Ledger ledger, ClaimState* st, int k) noexcept nogil:
    cdef Status r
    if st.pool[k]:
        if st.apply:
            r = _change(ledger, st, k, st.pool[k], False)
            if r != ST_OK:
                return r
        else:
            st.free[k] = _free_units(ledger, st, k) + st.pool[k]
        st.pool[k] = 0
    return ST_OK


cdef Status claim_one(Ledger ledger, ClaimState* st, int32_t slot, int32_t j, int32_t s, const double* xyz,
                      int32_t q, uint8_t* out_status, int32_t* out_store) noexcept nogil:
    cdef int t, k, best = -1
    cdef double d, best_dot = -3.0
    cdef bint quota_ok = False, in_reach = False
    cdef int32_t take
    cdef Status code = ST_OK, r
    cdef int n_sku = st.n_sku
    if st.cust[slot] + <int64_t>q > st.customer_limit:
        code = ST_CUSTOMER_LIMIT
    elif st.claimed + q > st.quota:
        code = ST_SOLD_OUT
    elif not st.apply and s < 0:
        # the nearest store in reach that can give all q units
        for t in range(st.n_st):
            d = xyz[0] * st.store_xyz[3 * t] + xyz[1] * st.store_xyz[3 * t + 1] + xyz[2] * st.store_xyz[3 * t + 2]
            if d < st.limit_dot:
                continue
            in_reach = True
            if st.store_claimed[t] + <int64_t>q > st.store_quota[t]:
                continue
            quota_ok = True
            if st.pool[t * n_sku + j] + _free_units(ledger, st, t * n_sku + j) >= q and d > best_dot:
                best = t
                best_dot = d
        s = best
        if s < 0:
            # every store in reach used its quota up; or none in reach, or none with the units
            code = ST_STORE_QUOTA if in_reach and not quota_ok else ST_INSUFFICIENT_STOCK
    elif st.store_claimed[s] + <int64_t>q > st.store_quota[s]:
        code = ST_STORE_QUOTA
    elif not st.apply and st.pool[s * n_sku + j] + _free_units(ledger, st, s * n_sku + j) < q:
        code = ST_INSUFFICIENT_STOCK
    if code != ST_OK:
        if st.apply:
            return ST_INVARIANT
        out_status[0] = <uint8_t>code
        out_store[0] = -1
        return ST_OK
    k = s * n_sku + j
    take = st.pool[k] if st.pool[k] < q else q
    st.pool[k] -= take
    if q > take:
        if st.apply:
            r = _change(ledger, st, k, q - take, True)
            if r != ST_OK:
                return r
        else:
            st.free[k] = _free_units(ledger, st, k) - (q - take)
    st.store_claimed[s] += q
    st.claimed += q
    st.cust[slot] += q
    out_status[0] = 0
    out_store[0] = s
    if st.earmarked:
        # a store or a sale that is full gives its earmark back
        if st.store_claimed[s] >= st.store_quota[s]:
            for t in range(n_sku):
                r = _give_back(ledger, st, s * n_sku + t)
                if r != ST_OK:
                    return r
        if st.claimed >= st.quota:
            for t in range(st.n_st * n_sku):
                r = _give_back(ledger, st, t)
                if r != ST_OK:
                    return r
    return ST_OK


def claim_batch(Ledger ledger, bint apply, bint earmarked, const int32_t[::1] store_loc, const int32_t[::1] sku_idx,
                const int32_t[::1] store_quota, int32_t[::1] store_claimed, int32_t[::1] pool,
                const double[::1] store_xyz, double limit_dot, int64_t quota, int64_t claimed,
                int32_t customer_limit, int32_t[::1] cust, const int32_t[::1] c_cust, const int32_t[::1] c_sku,
                const int32_t[::1] c_store, const double[::1] c_xyz, const int32_t[::1] c_qty,
                uint8_t[::1] out_status, int32_t[::1] out_store):
    """Decide (``apply=False``; changes nothing) or apply (``apply=True``) a batch of claims.

    Returns ``(status, claimed after)``; see :func:`pyomni.flash.claim_pass` for the arguments.
    """
    cdef int64_t n = c_qty.shape[0], i, n_cells = store_loc.shape[0] * sku_idx.shape[0]
    cdef int n_st = store_loc.shape[0]
    if (c_cust.shape[0] != n or c_sku.shape[0] != n or c_store.shape[0] != n or c_xyz.shape[0] != 3 * n
            or out_status.shape[0] != n or out_store.shape[0] != n or store_quota.shape[0] != n_st
            or store_claimed.shape[0] != n_st or pool.shape[0] != n_cells or store_xyz.shape[0] != 3 * n_st):
        raise ValueError("claim_batch: array lengths do not match")
    cdef ClaimState st
    cdef Status r = ST_OK
    st.n_st = n_st
    st.n_sku = sku_idx.shape[0]
    st.store_loc = &store_loc[0] if n_st else NULL
    st.sku_idx = &sku_idx[0]
    st.store_quota = &store_quota[0] if n_st else NULL
    st.store_xyz = &store_xyz[0] if n_st else NULL
    st.limit_dot = limit_dot
    st.quota = quota
    st.claimed = claimed
    st.customer_limit = customer_limit
    st.apply = apply
    st.earmarked = earmarked
    cdef int32_t* scratch = NULL
    cdef int64_t n_cust = cust.shape[0]
    # decide mode works on copies: the caller's arrays and the ledger stay as they are
    scratch = <int32_t*>malloc(sizeof(int32_t) * (n_st + 2 * n_cells + n_cust + 1))
    if scratch == NULL:
        return ST_NO_MEMORY, claimed
    try:
        if apply:
            st.store_claimed = &store_claimed[0] if n_st else NULL
            st.pool = &pool[0] if n_cells else NULL
            st.cust = &cust[0] if n_cust else NULL
        else:
            st.store_claimed = scratch
            st.pool = scratch + n_st
            st.cust = scratch + n_st + n_cells
            if n_st:
                memcpy(st.store_claimed, &store_claimed[0], sizeof(int32_t) * n_st)
            if n_cells:
                memcpy(st.pool, &pool[0], sizeof(int32_t) * n_cells)
            if n_cust:
                memcpy(st.cust, &cust[0], sizeof(int32_t) * n_cust)
        st.free = scratch + n_st + n_cells + n_cust
        for i in range(n_cells):
            st.free[i] = -1
        with nogil:
            for i in range(n):
                if c_store[i] >= n_st or c_sku[i] < 0 or c_sku[i] >= st.n_sku or c_cust[i] < 0 \
                        or c_cust[i] >= n_cust or c_qty[i] <= 0:
                    r = ST_INVARIANT
                    break
                r = claim_one(ledger, &st, c_cust[i], c_sku[i], c_store[i], &c_xyz[3 * i], c_qty[i],
                              &out_status[i], &out_store[i])
                if r != ST_OK:
                    break
    finally:
        free(scratch)
    return r, st.claimed

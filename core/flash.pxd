# Flash-sale claims (declarations). See flash.pyx; the plain-Python twin is pyomni.flash.claim_pass.

from libc.stdint cimport int32_t, int64_t, uint8_t
from pyomni._core.ledger cimport Ledger
from pyomni._core.status cimport Status

ctypedef struct ClaimState:
    # one sale's quota state for one pass (the arrays are n_stores and n_stores x n_skus, flat)
    int n_st
    int n_sku
    const int32_t* store_loc
    const int32_t* sku_idx
    const int32_t* store_quota
    int32_t* store_claimed
    int32_t* pool
    int32_t* free            # decide mode: the ledger's free units as the pass changed them (-1 = not read)
    const double* store_xyz
    double limit_dot
    int64_t quota
    int64_t claimed
    int32_t customer_limit
    int32_t* cust
    bint apply
    bint earmarked

cdef Status claim_one(Ledger ledger, ClaimState* st, int32_t slot, int32_t j, int32_t s, const double* xyz,
                      int32_t q, uint8_t* out_status, int32_t* out_store) noexcept nogil

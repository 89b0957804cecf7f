# cython: freethreading_compatible = False
"""The protobuf wire format of ``RouteOrders``, read and written natively.

``RouteOrders`` carries one ``RouteOrderRequest`` message per order, and
protobuf's Python objects cost about 30 µs per order to read and to answer --
more than deciding the order. For a batch of plain delivery orders (one policy
and ttl, a destination, no pickup, no per-order limits or exclusions), this
module reads the request's bytes straight into the columns ``route_columns``
takes, and writes the response's bytes straight from the columns it answers
with. Anything else -- another field, a pickup order, bytes that do not parse
-- makes :func:`read_route_orders` return ``None`` and the servicer takes the
general path, whose protobuf objects then report the problem exactly.

Encodings follow https://protobuf.dev/programming-guides/encoding/ (proto3:
fields at their default value are not written). The field numbers are those of
``proto/pyomni/v1/routing.proto`` and ``types.proto``; ``tests/test_protowire.py``
checks both functions against protobuf's own parser and serializer.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport int32_t, int64_t, uint8_t, uint64_t
from libc.stdlib cimport free, realloc
from libc.string cimport memcpy

import numpy as np

cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object s, Py_ssize_t* size) except NULL


# -- reading ----------------------------------------------------------------------------------
cdef inline bint _varint(const uint8_t** p, const uint8_t* end, uint64_t* out) noexcept:
    cdef uint64_t v = 0
    cdef int shift = 0
    while p[0] < end and shift < 64:
        v |= (<uint64_t>(p[0][0] & 0x7F)) << shift
        if not (p[0][0] & 0x80):
            p[0] += 1
            out[0] = v
            return True
        p[0] += 1
        shift += 7
    return False


cdef inline bint _fixed64(const uint8_t** p, const uint8_t* end, double* out) noexcept:
    if end - p[0] < 8:
        return False
    memcpy(out, p[0], 8)           # little-endian on every platform this builds for (x86-64, aarch64)
    p[0] += 8
    return True


cdef inline bint _skip(const uint8_t** p, const uint8_t* end, int wire) noexcept:
    cdef uint64_t n
    if wire == 0:
        return _varint(p, end, &n)
    if wire == 1:
        if end - p[0] < 8:
            return False
        p[0] += 8
        return True
    if wire == 2:
        if not _varint(p, end, &n) or n > <uint64_t>(end - p[0]):
            return False
        p[0] += n
        return True
    if wire == 5:
        if end - p[0] < 4:
            return False
        p[0] += 4
        return True
    return False


cdef inline bint _len(const uint8_t** p, const uint8_t* end, const uint8_t** sub_end) noexcept:
    cdef uint64_t n
    if not _varint(p, end, &n) or n > <uint64_t>(end - p[0]):
        return False
    sub_end[0] = p[0] + n
    return True


cdef object _text(const uint8_t* p, const uint8_t* end):
    return PyUnicode_DecodeUTF8(<const char*>p, end - p, NULL)


def read_route_orders(bytes data):
    """The columns of a ``RouteOrdersRequest`` of plain delivery orders, or ``None`` (general path).

    Returns ``(order_ids, request_ids, line_counts, skus, qtys, lat, lon, channels, policy, ttl)``.
    """
    cdef const uint8_t* p = <const uint8_t*> PyBytes_AS_STRING(data)
    cdef const uint8_t* end = p + PyBytes_GET_SIZE(data)
    cdef const uint8_t* r_end
    cdef const uint8_t* o_end
    cdef const uint8_t* x_end
    cdef const uint8_t* s
    cdef uint64_t key, v
    cdef int field, wire
    cdef double d, lat_v, lon_v, ttl = 0.0, ttl_v
    cdef bint has_dest, has_order, first = True
    cdef int64_t count
    ids, rids, skus, chans = [], [], [], []
    counts, qtys, lats, lons = [], [], [], []
    policy = b""
    try:
        while p < end:
            if not _varint(&p, end, &key):
                return None
            field, wire = <int>(key >> 3), <int>(key & 7)
            if field != 1 or wire != 2:
                return None
            if not _len(&p, end, &r_end):
                return None
            rid = ""
            pol = b""
            ttl_v = 0.0
            has_order = False
            oid = ""
            chan = ""
            has_dest = False
            lat_v = lon_v = 0.0
            count = 0
            while p < r_end:                                  # RouteOrderRequest
                if not _varint(&p, r_end, &key):
                    return None
                field, wire = <int>(key >> 3), <int>(key & 7)
                if field == 1 and wire == 2:
                    if not _len(&p, r_end, &x_end):
                        return None
                    rid = _text(p, x_end)
                    p = x_end
                elif field == 3 and wire == 2:
                    if not _len(&p, r_end, &x_end):
                        return None
                    pol = (<const char*>p)[:x_end - p]
                    p = x_end
                elif field == 4 and wire == 1:
                    if not _fixed64(&p, r_end, &ttl_v):
                        return None
                elif field == 2 and wire == 2:
                    if has_order or not _len(&p, r_end, &o_end):
                        return None
                    has_order = True
                    while p < o_end:                          # Order
                        if not _varint(&p, o_end, &key):
                            return None
                        field, wire = <int>(key >> 3), <int>(key & 7)
                        if field == 1 and wire == 2:
                            if not _len(&p, o_end, &x_end):
                                return None
                            oid = _text(p, x_end)
                            p = x_end
                        elif field == 2 and wire == 2:        # OrderLine
                            if not _len(&p, o_end, &x_end):
                                return None
                            sku = ""
                            v = 0
                            while p < x_end:
                                if not _varint(&p, x_end, &key):
                                    return None
                                field, wire = <int>(key >> 3), <int>(key & 7)
                                if field == 1 and wire == 2:
                                    if not _len(&p, x_end, &s):
                                        return None
                                    sku = _text(p, s)
                                    p = s
                                elif field == 2 and wire == 0:
                                    if not _varint(&p, x_end, &v):
                                        return None
                                else:
                                    return None
                            skus.append(sku)
                            qtys.append(<int64_t> v)
                            count += 1
                        elif field == 3 and wire == 2:        # LatLng
                            if not _len(&p, o_end, &x_end):
                                return None
                            has_dest = True
                            while p < x_end:
                                if not _varint(&p, x_end, &key):
                                    return None
                                field, wire = <int>(key >> 3), <int>(key & 7)
                                if field == 1 and wire == 1:
                                    if not _fixed64(&p, x_end, &lat_v):
                                        return None
                                elif field == 2 and wire == 1:
                                    if not _fixed64(&p, x_end, &lon_v):
                                        return None
                                else:
                                    return None
                        elif field == 6 and wire == 2:
                            if not _len(&p, o_end, &x_end):
                                return None
                            chan = _text(p, x_end)
                            p = x_end
                        elif field == 5 and wire == 0:        # fulfilment: UNSPECIFIED or DELIVERY only
                            if not _varint(&p, o_end, &v) or v > 1:
                                return None
                        else:                                 # pickup, limits, exclusions, unknown: general path
                            return None
                else:
                    return None
            if not has_order or not has_dest or not oid or count == 0:
                return None
            if first:
                policy, ttl, first = pol, ttl_v, False
            elif pol != policy or ttl_v != ttl:
                return None
            ids.append(oid)
            rids.append(rid or None)
            counts.append(count)
            lats.append(lat_v)
            lons.append(lon_v)
            chans.append(chan or "app")
    except UnicodeDecodeError:
        return None
    if first:
        return None
    return (ids, rids, np.asarray(counts, dtype=np.int64), skus, np.asarray(qtys, dtype=np.int64),
            np.asarray(lats, dtype=np.float64), np.asarray(lons, dtype=np.float64), chans,
            policy.decode("utf-8", "replace"), ttl)


# -- writing ----------------------------------------------------------------------------------
cdef struct Buf:
    char* data
    Py_ssize_t n
    Py_ssize_t cap


cdef int _grow(Buf* b, Py_ssize_t more) except -1:
    cdef Py_ssize_t cap
    cdef char* d
    if b.n + more <= b.cap:
        return 0
    cap = max(b.cap * 2, b.n + more, 256)
    d = <char*> realloc(b.data, cap)
    if d == NULL:
        raise MemoryError()
    b.data = d
    b.cap = cap
    return 0


cdef inline int _put_varint(Buf* b, uint64_t v) except -1:
    _grow(b, 10)
    while v >= 0x80:
        b.data[b.n] = <char>((v & 0x7F) | 0x80)
        b.n += 1
        v >>= 7
    b.data[b.n] = <char>v
    b.n += 1
    return 0


cdef inline int _put_bytes(Buf* b, const char* p, Py_ssize_t n) except -1:
    _grow(b, n)
    memcpy(b.data + b.n, p, n)
    b.n += n
    return 0


cdef inline int _put_str(Buf* b, int field, object text) except -1:
    cdef Py_ssize_t n
    cdef const char* p = PyUnicode_AsUTF8AndSize(text, &n)
    if n == 0:
        return 0
    _put_varint(b, (<uint64_t>field << 3) | 2)
    _put_varint(b, <uint64_t>n)
    _put_bytes(b, p, n)
    return 0


cdef inline int _put_double(Buf* b, int field, double v) except -1:
    if v == 0.0:
        return 0
    _put_varint(b, (<uint64_t>field << 3) | 1)
    _put_bytes(b, <const char*>&v, 8)
    return 0


cdef inline int _put_sub(Buf* b, int field, Buf* sub) except -1:
    _put_varint(b, (<uint64_t>field << 3) | 2)
    _put_varint(b, <uint64_t>sub.n)
    _put_bytes(b, sub.data, sub.n)
    return 0


def write_route_orders(list order_ids, const uint8_t[::1] status, const int64_t[::1] reservation,
                       const double[::1] total, const double[::1] expires, const int32_t[::1] n_ship,
                       list ship_locations, const double[::1] ship_km, const double[::1] ship_cost,
                       const int64_t[::1] take, const int64_t[::1] line_counts, list skus,
                       const uint8_t[::1] split, list split_reasons, str policy_key, dict written):
    """The bytes of a ``RouteOrdersResponse``: row ``i`` is ``written[i]`` (a serialized
    ``RouteOrderResult``) where present, else built from the columns (an ALLOCATED allocation)."""
    cdef Buf out, result, alloc, ship, sub
    out.data = result.data = alloc.data = ship.data = sub.data = NULL
    out.n = result.n = alloc.n = ship.n = sub.n = 0
    out.cap = result.cap = alloc.cap = ship.cap = sub.cap = 0
    cdef Py_ssize_t i, k, j, n = len(order_ids), s = 0, t = 0, line = 0, nl
    cdef int64_t q
    cdef double c, cost_total
    cdef const char* raw
    cdef Py_ssize_t raw_n
    try:
        for i in range(n):
            nl = line_counts[i]
            if i in written:
                piece = written[i]
                raw = PyBytes_AS_STRING(piece)
                raw_n = PyBytes_GET_SIZE(piece)
                _put_varint(&out, (1 << 3) | 2)
                _put_varint(&out, <uint64_t>raw_n)
                _put_bytes(&out, raw, raw_n)
                line += nl
                continue
            alloc.n = 0
            _put_str(&alloc, 1, order_ids[i])
            if status[i]:
                _put_varint(&alloc, (2 << 3) | 0)
                _put_varint(&alloc, status[i])
            if reservation[i]:
                _put_str(&alloc, 3, f"R{reservation[i]:010d}")
            for k in range(n_ship[i]):
                ship.n = 0
                _put_str(&ship, 1, ship_locations[s])
                for j in range(nl):
                    q = take[t + j]
                    if q:
                        sub.n = 0
                        _put_str(&sub, 1, skus[line + j])
                        _put_varint(&sub, (2 << 3) | 0)
                        _put_varint(&sub, <uint64_t>q)
                        _put_sub(&ship, 2, &sub)
                _put_double(&ship, 3, ship_km[s])
                sub.n = 0
                cost_total = 0.0
                for j in range(5):
                    c = ship_cost[5 * s + j]
                    cost_total += c
                    _put_double(&sub, j + 1, c)
                _put_double(&sub, 6, cost_total)
                _put_sub(&ship, 4, &sub)
                _put_sub(&alloc, 4, &ship)
                s += 1
                t += nl
            _put_double(&alloc, 5, total[i])
            sub.n = 0                                          # Explanation: the recorded kind
            _put_str(&sub, 1, "recorded")
            if n_ship[i]:
                _put_varint(&sub, (2 << 3) | 0)
                _put_varint(&sub, <uint64_t>n_ship[i])
            if n_ship[i] > 1:
                _put_varint(&sub, (5 << 3) | 0)
                _put_varint(&sub, 1)
            _put_str(&sub, 6, split_reasons[split[i]])
            _put_str(&sub, 7, policy_key)
            _put_sub(&alloc, 7, &sub)
            _put_double(&alloc, 8, expires[i])
            result.n = 0
            _put_sub(&result, 1, &alloc)
            _put_sub(&out, 1, &result)
            line += nl
        return PyBytes_FromStringAndSize(out.data, out.n) if out.n else b""
    finally:
        free(out.data)
        free(result.data)
        free(alloc.data)
        free(ship.data)
        free(sub.data)

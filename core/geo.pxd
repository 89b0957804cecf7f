# Geometry of the location network (declarations).
#
# Locations are 3-D unit vectors: the nearest location by great-circle distance
# is the one with the smallest chord |p - q|, so the hot loops compare squared
# chords (no trigonometry) and convert to kilometres only for the few locations
# that are actually priced. ``LocationIndex`` is a static k-d tree over those
# vectors; each node keeps its bounding box so a search can bound the distance
# of everything below it and stop early.

cdef extern from "<math.h>" nogil:
    double sqrt(double)
    double asin(double)
    double sin(double)
    double cos(double)

cdef enum:
    KD_LEAF_SIZE = 8
    KD_STACK = 128          # > 2 x tree depth for any network that fits in int32

# Constants are literals inside the inline functions: module-level C variables
# do not cross module boundaries, inline functions do.

ctypedef struct KdNode:
    double lo[3]
    double hi[3]
    int start           # first position in ``perm`` (leaf) ...
    int end             # ... one past the last
    int left            # child node ids, -1 for a leaf
    int right


cdef inline void unit_vector(double lat, double lon, double* out) noexcept nogil:
    cdef double la = lat * (3.141592653589793 / 180.0)
    cdef double lo = lon * (3.141592653589793 / 180.0)
    out[0] = cos(la) * cos(lo)
    out[1] = cos(la) * sin(lo)
    out[2] = sin(la)


cdef inline double chord_sq(const double* a, const double* b) noexcept nogil:
    cdef double dx = a[0] - b[0]
    cdef double dy = a[1] - b[1]
    cdef double dz = a[2] - b[2]
    return dx * dx + dy * dy + dz * dz


cdef inline double chord_sq_to_km(double c2) noexcept nogil:
    # great-circle km of a chord: 2 R asin(c / 2); chord <= 2 on the unit sphere
    cdef double half = sqrt(c2) * 0.5
    if half > 1.0:
        half = 1.0
    return 2.0 * 6371.0088 * asin(half)    # IUGG mean Earth radius


cdef inline double chord_sq_to_km_lb(double c2) noexcept nogil:
    # a cheap lower bound of chord_sq_to_km: the arc is never shorter than its chord
    return 6371.0088 * sqrt(c2)


cdef inline double box_chord_sq(const KdNode* node, const double* p) noexcept nogil:
    # squared distance from p to the node's box: a lower bound for every point in it
    cdef double d = 0.0, t
    cdef int k
    for k in range(3):
        if p[k] < node.lo[k]:
            t = node.lo[k] - p[k]
            d += t * t
        elif p[k] > node.hi[k]:
            t = p[k] - node.hi[k]
            d += t * t
    return d


cdef class LocationIndex:
    cdef readonly int n
    cdef double* xyz            # 3 x n, location unit vectors
    cdef int* perm              # location ids in tree order
    cdef KdNode* nodes
    cdef readonly int n_nodes
    cdef int _build(self, int start, int end) except -1
    cdef void _select(self, int lo, int hi, int k, int axis) noexcept

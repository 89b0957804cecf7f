# cython: language_level=3
"""Static k-d tree over location unit vectors (see geo.pxd for the idea)."""

from libc.stdlib cimport malloc, free
from libc.string cimport memcpy

#: IUGG mean Earth radius, as used by the inline helpers in geo.pxd
EARTH_RADIUS_KM = 6371.0088


def py_unit_vector(double lat, double lon):
    """Unit vector of a WGS-84 point, computed exactly as the native router does."""
    cdef double v[3]
    unit_vector(lat, lon, v)
    return (v[0], v[1], v[2])


def py_chord_sq_to_km(double c2):
    """Great-circle kilometres of a squared chord, exactly as the native router computes them."""
    return chord_sq_to_km(c2)


cdef class LocationIndex:
    """k-d tree over location unit vectors.

    Parameters
    ----------
    xyz : float64 buffer of shape (n, 3)
        Unit vectors of the locations, location ``i`` in row ``i``.
    """

    def __cinit__(self, const double[:, ::1] xyz):
        cdef int n = xyz.shape[0]
        if xyz.shape[1] != 3:
            raise ValueError("xyz must have shape (n, 3)")
        self.n = n
        self.n_nodes = 0
        self.xyz = <double*> malloc(max(n, 1) * 3 * sizeof(double))
        self.perm = <int*> malloc(max(n, 1) * sizeof(int))
        # a binary tree with leaves of >= 1 point has < 2n nodes
        self.nodes = <KdNode*> malloc(max(2 * n, 1) * sizeof(KdNode))
        if self.xyz == NULL or self.perm == NULL or self.nodes == NULL:
            raise MemoryError()
        if n:
            memcpy(self.xyz, &xyz[0, 0], n * 3 * sizeof(double))
        cdef int i
        for i in range(n):
            self.perm[i] = i
        if n:
            self._build(0, n)

    def __dealloc__(self):
        free(self.xyz)
        free(self.perm)
        free(self.nodes)

    cdef int _build(self, int start, int end) except -1:
        cdef int node_id = self.n_nodes
        self.n_nodes += 1
        cdef KdNode* node = &self.nodes[node_id]
        cdef int i, k, p
        for k in range(3):
            node.lo[k] = 1e300
            node.hi[k] = -1e300
        for i in range(start, end):
            p = self.perm[i]
            for k in range(3):
                if self.xyz[3 * p + k] < node.lo[k]:
                    node.lo[k] = self.xyz[3 * p + k]
                if self.xyz[3 * p + k] > node.hi[k]:
                    node.hi[k] = self.xyz[3 * p + k]
        node.start = start
        node.end = end
        node.left = -1
        node.right = -1
        if end - start <= KD_LEAF_SIZE:
            return node_id
        # split the widest axis at the median (quickselect on perm)
        cdef int axis = 0
        for k in range(1, 3):
            if node.hi[k] - node.lo[k] > node.hi[axis] - node.lo[axis]:
                axis = k
        cdef int mid = (start + end) // 2
        self._select(start, end - 1, mid, axis)
        cdef int left = self._build(start, mid)
        cdef int right = self._build(mid, end)
        self.nodes[node_id].left = left
        self.nodes[node_id].right = right
        return node_id

    cdef void _select(self, int lo, int hi, int k, int axis) noexcept:
        # Hoare quickselect: afterwards perm[k] has the k-th smallest coordinate,
        # smaller ones before it and larger ones after.
        cdef int i, j, t
        cdef double pivot
        while lo < hi:
            pivot = self.xyz[3 * self.perm[(lo + hi) // 2] + axis]
            i = lo
            j = hi
            while i <= j:
                while self.xyz[3 * self.perm[i] + axis] < pivot:
                    i += 1
                while self.xyz[3 * self.perm[j] + axis] > pivot:
                    j -= 1
                if i <= j:
                    t = self.perm[i]
                    self.perm[i] = self.perm[j]
                    self.perm[j] = t
                    i += 1
                    j -= 1
            if k <= j:
                hi = j
            elif k >= i:
                lo = i
            else:
                return

    def nearest(self, double lat, double lon, int k=1):
        """Ids of the ``k`` nearest locations to a point, nearest first (for tests and tools).

        The router has its own fused search; this one exists so the tree can be
        checked against brute force.
        """
        cdef double p[3]
        unit_vector(lat, lon, p)
        cdef list best = []          # (chord_sq, id), sorted, at most k
        cdef int stack[KD_STACK]
        cdef int top = 0, node_id, i, loc
        cdef double c2, bound
        if self.n == 0 or k <= 0:
            return []
        stack[0] = 0
        top = 1
        while top:
            top -= 1
            node_id = stack[top]
            bound = best[len(best) - 1][0] if len(best) == k else 1e300
            if box_chord_sq(&self.nodes[node_id], p) > bound:
                continue
            if self.nodes[node_id].left < 0:
                for i in range(self.nodes[node_id].start, self.nodes[node_id].end):
                    loc = self.perm[i]
                    c2 = chord_sq(&self.xyz[3 * loc], p)
                    if len(best) < k or (c2, loc) < best[len(best) - 1]:
                        best.append((c2, loc))
                        best.sort()
                        del best[k:]
            else:
                stack[top] = self.nodes[node_id].right
                stack[top + 1] = self.nodes[node_id].left
                top += 2
        return [loc for _, loc in best]

"""The pyomni gRPC service: ``pyomni.v1`` over an :class:`pyomni.Engine`.

``status`` maps every :mod:`pyomni.errors` class to a gRPC status with
details; ``servicers``, ``selling`` and ``stores`` are thin adapters over the
engine (``stores`` also runs the stores' order feeds); ``metrics`` counts
and times RPCs for Prometheus; ``server`` builds the server
(:func:`create_server`) and runs it (:func:`serve`, the ``pyomni serve``
command). The wire conversions live in :mod:`pyomni.wire`, shared with
:class:`pyomni.Client`.
"""

from .server import SERVICE_NAMES, ServerConfig, create_server, serve
from .status import STATUS_CODES, status_of

__all__ = ["create_server", "serve", "ServerConfig", "SERVICE_NAMES", "STATUS_CODES", "status_of"]

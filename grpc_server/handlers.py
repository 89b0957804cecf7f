"""One helper the server's interceptors share: a method handler with its behaviour wrapped."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

__all__ = ["rewrap"]

Behaviour = Callable[[Any, grpc.ServicerContext], Any]


def rewrap(handler: Any, unary_response: Callable[[Behaviour], Behaviour],
           stream_response: Callable[[Behaviour], Behaviour]) -> Any:
    """``handler`` (a ``grpc.RpcMethodHandler``) with its behaviour passed through a wrapper.

    ``unary_response`` wraps the behaviour of a call that answers once (unary-unary and
    stream-unary), ``stream_response`` one that answers with a stream (its wrapper is a generator);
    the (de)serialisers stay. Interceptors wrap once per method and cache the result, so a call pays
    only for what the wrapper itself does.
    """
    kw = {"request_deserializer": handler.request_deserializer,
          "response_serializer": handler.response_serializer}
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(unary_response(handler.unary_unary), **kw)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(unary_response(handler.stream_unary), **kw)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(stream_response(handler.unary_stream), **kw)
    return grpc.stream_stream_rpc_method_handler(stream_response(handler.stream_stream), **kw)

"""The gRPC edge: identity and role checks, and errors turned into statuses
(signer.edge.errors.ERROR_KINDS is the one table).

grpc's server interceptors cannot see the peer's certificate, so the
interceptor wraps each method handler: the wrapped behaviour authenticates
from `context.auth_context()`, checks RPC_ROLES, puts the Identity in a
context variable for the servicer, and maps exceptions to statuses.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from custos.signer.edge import errors, logs, metrics
from custos.signer.edge.auth import Authorizer, Identity

log = logging.getLogger("custos.edge")

current_identity: contextvars.ContextVar[Identity] = contextvars.ContextVar("current_identity")

MAX_MESSAGE = 1024


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status and caller-safe message for an exception raised by a handler."""
    return grpc.StatusCode[errors.kind_of(exc).status], errors.public_message(exc)


class TooManyStreams(errors.BudgetExceeded):
    """A stream would pass the per-caller or the server-wide limit (RESOURCE_EXHAUSTED)."""


class StreamLimiter:
    """Counts open streams per caller and in total.

    A sync gRPC server runs each open stream on one of its threads until the
    stream ends. Bounding streams well below the thread count keeps threads for
    unary calls and health checks, whatever any caller keeps open.
    """

    def __init__(self, total: int, per_caller: int) -> None:
        self.total = total
        self.per_caller = per_caller
        self._lock = threading.Lock()
        self._open: dict[str, int] = {}

    def acquire(self, caller: str) -> None:
        with self._lock:
            mine = self._open.get(caller, 0)
            if mine >= self.per_caller:
                raise TooManyStreams(
                    f"too many open streams: this caller has {mine} "
                    f"(server.max_streams_per_caller = {self.per_caller}); close one first",
                    {"code": "too_many_streams", "limit": str(self.per_caller), "scope": "caller"},
                )
            if sum(self._open.values()) >= self.total:
                raise TooManyStreams(
                    f"too many open streams on this server (server.max_streams = "
                    f"{self.total}); retry later",
                    {"code": "too_many_streams", "limit": str(self.total), "scope": "server"},
                )
            self._open[caller] = mine + 1

    def release(self, caller: str) -> None:
        with self._lock:
            left = self._open[caller] - 1
            if left:
                self._open[caller] = left
            else:
                del self._open[caller]

    def open_streams(self) -> int:
        with self._lock:
            return sum(self._open.values())


def _peer_certificate(context: grpc.ServicerContext) -> bytes | None:
    certs: Any = context.auth_context().get("x509_pem_cert")
    return bytes(certs[0]) if certs else None


class EdgeInterceptor(grpc.ServerInterceptor):  # type: ignore[type-arg]
    """Authenticates, authorizes and maps errors for every RPC."""

    def __init__(
        self,
        authorizer: Authorizer,
        on_unavailable: Callable[[BaseException], None] = lambda _exc: None,
        streams: StreamLimiter | None = None,
    ) -> None:
        self._authorizer = authorizer
        self._on_unavailable = on_unavailable
        self._streams = streams or StreamLimiter(total=16, per_caller=4)

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        # At run time a handler is a namedtuple (grpc's _RpcMethodHandler): _replace works.
        handler: Any = continuation(handler_call_details)
        if handler is None:
            return None
        method: str = handler_call_details.method
        if handler.unary_unary is not None:
            return handler._replace(
                request_deserializer=None,
                unary_unary=self._wrap(method, handler.unary_unary, handler.request_deserializer),
            )
        if handler.unary_stream is not None:
            return handler._replace(
                request_deserializer=None,
                unary_stream=self._wrap_stream(
                    method, handler.unary_stream, handler.request_deserializer
                ),
            )
        if handler.stream_stream is not None:  # reflection
            return handler._replace(
                stream_stream=self._wrap_stream(method, handler.stream_stream, None)
            )
        if handler.stream_unary is not None:
            return handler._replace(stream_unary=self._wrap(method, handler.stream_unary, None))
        return handler

    def _enter(
        self,
        method: str,
        context: grpc.ServicerContext,
        request: Any,
        deserialize: Callable[[bytes], Any] | None,
    ) -> Any:
        """Authenticate, authorize, then decode the request (never decode for strangers)."""
        logs.context.set({"method": method})
        identity = self._authorizer.identify(_peer_certificate(context))
        logs.bind(caller=identity.subject)
        self._authorizer.authorize(identity, method)
        current_identity.set(identity)
        if deserialize is None:
            return request
        # Decoding here rather than in grpc turns garbage into INVALID_ARGUMENT, not INTERNAL.
        try:
            return deserialize(request)
        except DecodeError:
            raise errors.InvalidRequest("request is not a valid protobuf message") from None

    def _fail(self, method: str, exc: BaseException, context: grpc.ServicerContext) -> None:
        code, message = status_for(exc)
        if len(message) > MAX_MESSAGE:
            # A huge echo of caller input would reach the client as RESOURCE_EXHAUSTED.
            message = message[: MAX_MESSAGE - 3] + "..."
        if code is grpc.StatusCode.INTERNAL:
            log.exception("unexpected error in %s", method)
        elif code is grpc.StatusCode.UNAVAILABLE:
            log.warning("%s unavailable: %s", method, exc)
            self._on_unavailable(exc)
        details = getattr(exc, "details", None)
        if details:
            # Machine-readable reasons ride along as google.rpc.ErrorInfo.
            info = error_details_pb2.ErrorInfo(
                reason=details.get("code", type(exc).__name__), domain="custos", metadata=details
            )
            status = status_pb2.Status(code=code.value[0], message=message)
            status.details.add().Pack(info)
            context.abort_with_status(rpc_status.to_status(status))
        context.abort(code, message)

    def _wrap(
        self,
        method: str,
        behaviour: Callable[..., Any],
        deserialize: Callable[[bytes], Any] | None,
    ) -> Callable[..., Any]:
        def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
            started = time.perf_counter()
            code = "OK"
            try:
                return behaviour(self._enter(method, context, request, deserialize), context)
            except Exception as exc:
                code = status_for(exc)[0].name
                self._fail(method, exc, context)
                raise  # unreachable: abort raises
            finally:
                _observe(method, code, started)

        return wrapped

    def _wrap_stream(
        self,
        method: str,
        behaviour: Callable[..., Any],
        deserialize: Callable[[bytes], Any] | None,
    ) -> Callable[..., Any]:
        def wrapped(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            started = time.perf_counter()
            code = "OK"
            holder: str | None = None
            try:
                request = self._enter(method, context, request, deserialize)
                caller = current_identity.get().subject
                self._streams.acquire(caller)
                holder = caller
                yield from behaviour(request, context)
            except GeneratorExit:  # the client went away mid-stream
                code = grpc.StatusCode.CANCELLED.name
                raise
            except Exception as exc:  # noqa: BLE001 - every error becomes a status here
                code = status_for(exc)[0].name
                self._fail(method, exc, context)
            finally:
                _observe(method, code, started)
                # Released when the handler's thread is free again, not when the
                # client goes away: the limit counts threads held by streams.
                if holder is not None:
                    self._streams.release(holder)

        return wrapped


def _observe(method: str, code: str, started: float) -> None:
    service, name = metrics.rpc_labels(method)
    metrics.RPC_SECONDS.labels(service, name, code).observe(time.perf_counter() - started)

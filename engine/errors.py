"""Errors at the engine's public boundary, each mapped to one gRPC status code.

Why: a client must learn *what* was wrong (unknown document, stale version...)
from the status code alone, and the server must keep serving others.
"""

from __future__ import annotations

import grpc


class EngineError(Exception):
    code: grpc.StatusCode = grpc.StatusCode.INTERNAL


class DocumentNotFound(EngineError):
    code = grpc.StatusCode.NOT_FOUND


class DocumentAlreadyOpen(EngineError):
    code = grpc.StatusCode.ALREADY_EXISTS


class StaleVersion(EngineError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class PositionOutOfRange(EngineError):
    code = grpc.StatusCode.OUT_OF_RANGE


class InvalidInput(EngineError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class TooLarge(EngineError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Cancelled(EngineError):
    code = grpc.StatusCode.CANCELLED


class ModelUnavailable(EngineError):
    code = grpc.StatusCode.UNAVAILABLE

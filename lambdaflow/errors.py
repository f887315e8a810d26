"""Which exceptions are a user's to act on (printed as one line) rather than bugs (a stack trace)."""

from __future__ import annotations


class UserError(RuntimeError):
    """A problem the user can fix: a service down, a bad option, a missing topic."""


def is_user_error(exc: BaseException) -> bool:
    from lambdaflow.kafka_admin import KafkaUnavailable
    from lambdaflow.stack.daemon import ServiceError

    return isinstance(exc, (UserError, KafkaUnavailable, ServiceError))

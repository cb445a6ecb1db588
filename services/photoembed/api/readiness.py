"""What the API depends on, and how to ask each whether it answers: `GET /readyz` and the
`photoembed_dependency_up` gauges read the same probes."""

from __future__ import annotations

from collections.abc import Callable

from dramatiq.brokers.redis import RedisBroker

from photoembed.config import Settings
from photoembed.db import ping
from photoembed.storage import PhotoStorage


def probes(
    settings: Settings, broker: RedisBroker, storage: PhotoStorage
) -> dict[str, Callable[[], object]]:
    """Each dependency by name (database, broker: Redis, storage), with a call that raises when it
    does not answer."""
    return {
        "database": lambda: ping(settings.database_url),
        "broker": broker.client.ping,
        "storage": storage.check,
    }

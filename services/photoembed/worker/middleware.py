"""Dramatiq middleware of the worker: small classes, one concern each."""

from __future__ import annotations

from typing import Any

import dramatiq
import structlog
from dramatiq.broker import MessageProxy
from dramatiq.middleware import MiddlewareError

from photoembed.config import Settings
from photoembed.logging import get_logger
from photoembed.metrics import WORKER_READY
from photoembed.queue import DELIVER_WEBHOOK
from photoembed.sizing import plan_sizing
from photoembed.worker.boot_checks import run_boot_checks
from photoembed.worker.sweeper import SweeperThread

log = get_logger(__name__)


class SelfCheckFailed(MiddlewareError):
    """Raised from `before_worker_boot`: Dramatiq lets a MiddlewareError stop the process (exit 1)
    before any consumer starts, where it would swallow any other exception."""


class ModelSelfCheck(dramatiq.Middleware):
    """Loads the models (CLIP, and the face model with FACES_ENABLED) in the worker process and
    refuses to start on any finding.

    Hook: `before_worker_boot` runs in each worker process after the fork and before the worker's
    consumers exist, so no message can be taken from Redis by a worker that fails the check.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def before_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        results = run_boot_checks(self.settings)
        findings = [finding for result in results for finding in result.findings]
        for finding in findings:
            log.error("selfcheck.failed", code=finding.code, finding=finding.message)
        if findings:
            raise SelfCheckFailed(
                f"model self-check failed with {len(findings)} finding(s); not starting"
            )
        for result in results:
            log.info("selfcheck.passed", model=result.identity)
        WORKER_READY.set(1)
        sizing = plan_sizing(self.settings)
        log.info(
            "worker.policy",
            device=self.settings.clip_device,
            runtime=self.settings.embed_runtime,
            precision=self.settings.clip_precision,
            threads=self.settings.worker_threads,
            batch_size=self.settings.embed_batch_size,
            inference_streams=sizing.inference_streams,
            inference_threads=sizing.inference_threads,
            jpeg_decoder=self.settings.jpeg_decoder,
            db_pool_size=self.settings.db_pool_size,
            max_attempts=self.settings.max_attempts,
            retry_backoff_ms=[
                self.settings.retry_min_backoff_ms,
                self.settings.retry_max_backoff_ms,
            ],
            give_up_after_seconds=self.settings.give_up_after_seconds,
            faces=self.settings.face_model if self.settings.faces_enabled else "off",
        )

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        WORKER_READY.set(0)


class Sweep(dramatiq.Middleware):
    """Runs the sweeper thread in each worker process (a Redis lock keeps it to one sweep per
    interval cluster-wide). Hooks: `after_worker_boot` starts it once the self-check has passed;
    `before_worker_shutdown` stops it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.thread: SweeperThread | None = None

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        if self.settings.sweep_interval_seconds > 0:
            self.thread = SweeperThread(self.settings, broker)  # type: ignore[arg-type]
            self.thread.start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        if self.thread is not None:
            self.thread.stop()


class MessageContext(dramatiq.Middleware):
    """Binds `message_id`, `actor` and the photo id to every log event of a message.

    Hooks: `before_process_message` binds in the worker thread that runs the message;
    `after_process_message` and `after_skip_message` clear it again.
    """

    def before_process_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        structlog.contextvars.clear_contextvars()
        context: dict[str, Any] = {"message_id": message.message_id, "actor": message.actor_name}
        if message.args:
            subject = "delivery_id" if message.actor_name == DELIVER_WEBHOOK else "photo_id"
            context[subject] = message.args[0]
        structlog.contextvars.bind_contextvars(**context)

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        structlog.contextvars.clear_contextvars()

    def after_skip_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        structlog.contextvars.clear_contextvars()

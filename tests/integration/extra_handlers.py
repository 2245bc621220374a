"""A deployment's own job type, loaded through CONVEYOR_HANDLER_MODULES in the tests."""

from __future__ import annotations

from typing import Any

from conveyor import Config, Envelope, FieldError, Handler, JobFailed, Registry


def register(registry: Registry, config: Config) -> None:
    def validate(payload: dict[str, Any]) -> list[FieldError]:
        if not isinstance(payload.get("text"), str):
            return [FieldError("text", "must be a string")]
        return []

    async def run(job: Envelope, payload: dict[str, Any]) -> Any:
        return {"echo": payload["text"], "attempt": job.attempt, "tenant": job.tenant_id}

    registry.register(Handler("echo", validate, run, default_timeout_ms=lambda p: 1000))

    def shout(job: Envelope, payload: dict[str, Any]) -> Any:  # inline: a plain function
        if payload["text"] == "fail":
            raise JobFailed("asked to fail", retryable=False)
        return payload["text"].upper()

    registry.register(Handler("shout", validate, shout, default_timeout_ms=lambda p: 1000, inline=True))

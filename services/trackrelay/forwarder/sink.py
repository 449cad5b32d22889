"""The default HTTP sink: ``POST {analytics_url}/v1/track`` with a batch of events.

Events travel as the raw JSON the relay wrote, joined into the body without
being decoded and encoded again. Timeouts and connection errors are failures
to retry, never exceptions for the caller.
"""

from __future__ import annotations

import httpx

from trackrelay.control.push_outcome import Outcome, PushResult, classify


class HttpSink:
    def __init__(
        self, analytics_url: str, timeout: float, client: httpx.AsyncClient | None = None
    ) -> None:
        self.url = analytics_url.rstrip("/") + "/v1/track"
        self.timeout = timeout
        self.client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(timeout), limits=httpx.Limits(max_connections=64)
        )

    async def push(self, raw_events: list[bytes]) -> PushResult:
        body = b'{"events":[' + b",".join(raw_events) + b"]}"
        try:
            response = await self.client.post(
                self.url,
                content=body,
                headers={"content-type": "application/json"},
                timeout=self.timeout,
            )
        except httpx.TimeoutException:
            return PushResult(Outcome.FAILED, detail=f"timeout after {self.timeout}s")
        except httpx.HTTPError as exc:
            return PushResult(Outcome.FAILED, detail=f"{type(exc).__name__}: {exc}")
        result = classify(response.status_code, response.headers.get("retry-after"))
        if result.outcome is Outcome.REJECTED:
            return PushResult(Outcome.REJECTED, detail=response.text[:500])
        return result

    async def aclose(self) -> None:
        await self.client.aclose()

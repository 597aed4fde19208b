"""One delivery attempt over HTTP: sign, send, read the first bytes of the answer, classify.

Any 2xx is success. ``Retry-After`` (seconds or an HTTP date) is kept from 429 and 503 answers.
Redirects are not followed (a 3xx is a failure): a subscriber's URL is the one it registered.
"""

from __future__ import annotations

import asyncio
import functools
import socket
import ssl
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

import h11
import httpx

from cdp.errors import UnsafeURL
from cdp.timeutil import format_ts, utcnow
from cdp.webhooks import signing, urls
from cdp.webhooks.delivery_queue import Result
from cdp.webhooks.http_client import Client

RESPONSE_BYTES = 1024
USER_AGENT = "cdp-webhooks (+https://www.standardwebhooks.com)"


def client() -> Client:
    return Client(user_agent=USER_AGENT, keep_bytes=RESPONSE_BYTES)


@dataclass
class Outgoing:
    delivery_id: int
    endpoint_id: str
    url: str
    message_id: str
    body: bytes
    secrets: list[str]  # plaintext: the current one, then the previous one during a rotation

    def headers(self) -> dict[str, str]:
        """Signed now: ``webhook-timestamp`` is this attempt's time, so a receiver's tolerance window holds."""
        return signing.headers(self.secrets, self.message_id, int(time.time()), self.body)


@dataclass(frozen=True)
class _Parts:
    scheme: str
    host: str  # ASCII (IDNA) host name or IP, without brackets
    port: int
    host_header: str
    target: str  # path and query


@functools.lru_cache(maxsize=1024)
def _parts(url: str) -> _Parts:
    parsed = httpx.URL(url)
    return _Parts(
        parsed.scheme,
        parsed.raw_host.decode("ascii"),
        urls.port_of(parsed),
        parsed.netloc.decode("ascii"),
        parsed.raw_path.decode("ascii") or "/",
    )


def retry_after(status: int, value: str | None) -> float | None:
    if status not in (429, 503) or not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - utcnow()).total_seconds())


async def _addresses(parts: _Parts, allow_private: bool) -> tuple[str, ...]:
    """Where to connect: the host itself when private targets are allowed, else its checked public addresses."""
    if allow_private:
        return (parts.host,)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(parts.host, parts.port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UnsafeURL(f"url host {parts.host!r} does not resolve: {exc}") from exc
    return tuple(urls.connect_addresses(parts.host, urls.in_order(infos)))


async def send(http: Client, out: Outgoing, *, timeout: float, allow_private: bool) -> Result:
    at = format_ts(utcnow())
    started = time.perf_counter()
    error: str | None = None
    try:
        async with asyncio.timeout(timeout):
            parts = _parts(out.url)
            answer = await http.post(
                scheme=parts.scheme,
                addresses=await _addresses(parts, allow_private),
                port=parts.port,
                host=parts.host,
                host_header=parts.host_header,
                target=parts.target,
                headers=out.headers(),
                body=out.body,
            )
    except TimeoutError:
        error = f"timed out after {timeout:g} s"
    except UnsafeURL as exc:
        error = f"refused: {exc.message}"
    except ssl.SSLError as exc:
        error = f"TLS: {exc}"
    except (OSError, EOFError, h11.ProtocolError) as exc:
        error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    latency = int((time.perf_counter() - started) * 1000)
    if error is not None:
        return Result(out.delivery_id, out.endpoint_id, at, latency_ms=latency, error=error[:500])
    return Result(
        out.delivery_id,
        out.endpoint_id,
        at,
        answer.status,
        latency,
        answer.head.decode("utf-8", errors="replace"),
        None,
        retry_after(answer.status, answer.headers.get("retry-after")),
    )


def send_now(out: Outgoing, *, timeout: float, allow_private: bool) -> Result:
    """One attempt from synchronous code (a test ping from the API or the CLI)."""

    async def once() -> Result:
        http = client()
        try:
            return await send(http, out, timeout=timeout, allow_private=allow_private)
        finally:
            await http.aclose()

    return asyncio.run(once())

"""What bench/pipeline.py changes in the local stack for --rtt and --function-concurrency.

LocalStack has no hooks for these yet, so this swaps three names local/stack.py imported, for the
duration of a `with hooked_stack(...)` block (one stack at a time):

- local_smtp_uri: the function's SMTP URI points at a latency proxy (bench/smtp.py LatencyProxy, half
  the RTT each way) in front of the stack's SMTP inbox; the proxy also counts round trips.
- http_deliverer: the trigger bridge's deliveries (the only call without an explicit timeout; the sweep
  scheduler passes one) go out from `concurrency` threads instead of one at a time, as Eventarc
  delivers concurrently up to the instance's concurrency. A delivery that fails is counted, not retried.
- function_process_environment: THREADS=<concurrency> for functions-framework's gunicorn, as the
  deployed function's concurrency setting would give it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import local.stack
from bench.smtp import LatencyProxy

log = logging.getLogger("bench.stackhooks")


@dataclass
class Hooks:
    rtt_ms: float
    concurrency: int
    proxy: LatencyProxy | None = None
    failed_deliveries: list[str] = field(default_factory=list)


@contextmanager
def hooked_stack(rtt_ms: float, concurrency: int) -> Iterator[Hooks]:
    hooks = Hooks(rtt_ms, concurrency)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True, name="bench-latency-proxy")
    thread.start()
    executor = ThreadPoolExecutor(concurrency, thread_name_prefix="bench-bridge") if concurrency > 1 else None
    original_uri = local.stack.local_smtp_uri
    original_deliverer = local.stack.http_deliverer
    original_environment = local.stack.function_process_environment

    def local_smtp_uri(stack_uri: str, *, host: str, port: int, ca_file: str) -> str:
        proxy = LatencyProxy((host, port))
        proxy.one_way = rtt_ms / 2000
        asyncio.run_coroutine_threadsafe(proxy.start(), loop).result(timeout=10)
        hooks.proxy = proxy
        return original_uri(stack_uri, host=host, port=proxy.port, ca_file=ca_file)  # same host: TLS name holds

    def http_deliverer(url: str, *args: Any, **kwargs: Any):
        deliver = original_deliverer(url, *args, **kwargs)
        if executor is None or args or kwargs:  # serial as before, or the sweep scheduler's
            return deliver

        def deliver_concurrently(headers: dict[str, str], body: bytes) -> int:
            def attempt() -> None:
                status = deliver(headers, body)
                if not 200 <= status < 300:
                    hooks.failed_deliveries.append(f"HTTP {status}")

            executor.submit(attempt)
            return 204  # accepted for delivery; the bridge goes on to the next change

        return deliver_concurrently

    def function_process_environment(*args: Any, **kwargs: Any) -> dict[str, str]:
        environment = original_environment(*args, **kwargs)
        if concurrency > 1:
            environment["THREADS"] = str(concurrency)
        return environment

    local.stack.local_smtp_uri = local_smtp_uri
    local.stack.http_deliverer = http_deliverer
    local.stack.function_process_environment = function_process_environment
    try:
        yield hooks
    finally:
        local.stack.local_smtp_uri = original_uri
        local.stack.http_deliverer = original_deliverer
        local.stack.function_process_environment = original_environment
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
        if hooks.proxy is not None:
            asyncio.run_coroutine_threadsafe(hooks.proxy.stop(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)

"""Iteration-level scheduling: the event-loop side of the running batch.

Between two ticks of the model thread (bot/engine/kv_batch.py) the scheduler takes new requests into
free rows, drops rows whose caller gave up, and turns each row's new token into a piece of its
reply stream. A request never waits for another's reply: it joins at the next tick (at most one
decode step later), prefilled on its own and spliced in. A row leaves as soon as its reply is
complete (end-of-text, a turn marker, or its token limit), freeing its place at once. A row
whose logits were not finite (NO_TOKEN) fails alone; its neighbours, of any server, go on.

Adapter changes are jobs on the same single model thread, so they run between ticks; a version
is pinned (bot/engine/adapter_cache.py) from a row's admission to its end, so it is never evicted
while a row uses it, and each reply reports the version it started with.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

from bot.core.generation import Generation, GenerationFailed
from bot.core.metrics import Metrics
from bot.core.reply_decoder import ReplyDecoder
from bot.engine.adapter_cache import AdapterCache
from bot.engine.kv_batch import KVBatch, Row
from bot.engine.sampler import NO_TOKEN, Sampling

log = logging.getLogger(__name__)

_END = None  # the last item of a request's piece queue
MODEL_FAILED = "the model failed to generate a reply"


@dataclass(eq=False)
class Request:
    prompt: str
    prompt_ids: list[int]
    sampling: Sampling
    adapter: str  # the version that serves it
    decoder: ReplyDecoder
    future: asyncio.Future  # the Generation, or the error; cancelled when the caller leaves
    pieces: asyncio.Queue = field(default_factory=asyncio.Queue)  # str pieces, then _END
    started: float = field(default_factory=time.perf_counter)
    row: Row | None = None
    last_token_at: float | None = None  # perf_counter of its latest token (None: none yet)
    tokens: int = 0  # reply tokens taken (the model thread's count may run one ahead)


class PieceStream:
    """An engine's ReplyStream: the text pieces of one reply as its row decodes them."""

    def __init__(self, submit: Callable[[], asyncio.Future]):
        self._submit = submit  # a coroutine function: queues the request, returns it
        self.generation: Generation | None = None

    def __aiter__(self) -> AsyncIterator[str]:
        return self._pieces()

    async def _pieces(self) -> AsyncIterator[str]:
        request: Request = await self._submit()
        try:
            while (piece := await request.pieces.get()) is not _END:
                yield piece
            self.generation = request.future.result()  # raises what failed the request
        finally:
            if not request.future.done():  # the caller stopped listening: free the row
                request.future.cancel()


class Scheduler:
    """Owns the queue, the running requests and the loop that ticks the model thread."""

    def __init__(self, kv: KVBatch, model_thread: Executor, adapters: AdapterCache, *,
                 batch_max_size: int, batch_max_wait_ms: int, queue_max: int,
                 eos_token_id: int, needs_adapter: Callable[[Request], None],
                 metrics: Metrics):
        self.kv = kv
        self.metrics = metrics
        self._model_thread = model_thread
        self._adapters = adapters
        self._size = batch_max_size
        self._wait_s = batch_max_wait_ms / 1000
        self._eos = eos_token_id
        self._needs_adapter = needs_adapter  # sets a request aside until its version loads
        self.queue: asyncio.Queue[Request] = asyncio.Queue(maxsize=queue_max)
        # Requests whose adapter was just loaded: ready to run, ahead of the queue.
        self.ready_again: list[Request] = []
        self.running: list[Request] = []
        self._leaving: list[Row] = []  # rows to drop at the next tick

    @property
    def waiting(self) -> int:
        return self.queue.qsize() + len(self.ready_again)

    def requeue(self, requests: list[Request]) -> None:
        """Requests whose adapter is now loaded go first in line."""
        self.ready_again[:0] = requests
        if self.ready_again and self.queue.empty() and not self.running:
            # The loop may be waiting on an empty queue: one of them wakes it.
            self.queue.put_nowait(self.ready_again.pop(0))

    def leftover(self) -> list[Request]:
        """Every request not finished, taken out of the scheduler (on close)."""
        found = self.ready_again + self.running
        self.ready_again, self.running = [], []
        while not self.queue.empty():
            found.append(self.queue.get_nowait())
        return found

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._drop_abandoned()
            joining = await self._admit()
            if not joining and not self.running:
                continue
            self._adapters.use([r.adapter for r in joining])
            self.running += joining
            leaving, self._leaving = self._leaving, []
            try:
                out = await loop.run_in_executor(
                    self._model_thread, self.kv.tick, leaving, [r.row for r in joining],
                    lambda first: loop.call_soon_threadsafe(self._take, first))
            except asyncio.CancelledError:
                self._fail_running("the engine is shutting down")
                raise
            except Exception:
                log.exception("generation failed for %d running request(s)", len(self.running))
                self._fail_running(MODEL_FAILED)
                continue
            self._take(out)

    def _take(self, out: list[tuple[Row, int]]) -> None:
        """New tokens from the model thread, on the loop: pieces out, finished rows leave."""
        by_row = {id(r.row): r for r in self.running}
        for row, token in out:
            request = by_row.get(id(row))
            if request is None:
                continue  # it ended (or failed) at an earlier token
            if token == NO_TOKEN:
                self._fail_alone(request)
                continue
            self._time_token(request)
            if self._advance(request, token):
                self._finish(request)

    def _time_token(self, request: Request) -> None:
        now = time.perf_counter()
        if request.last_token_at is None:
            self.metrics.time_to_first_token.observe(now - request.started)
        else:
            self.metrics.inter_token_latency.observe(now - request.last_token_at)
        request.last_token_at = now

    async def _admit(self) -> list[Request]:
        """Requests for the free rows: at once when rows are running; when idle, the first
        to arrive and those that come within BATCH_MAX_WAIT_MS of it (one prefill for all)."""
        free = self._size - len(self.running)
        taken: list[Request] = []
        while self.ready_again and len(taken) < free:
            taken.append(self.ready_again.pop(0))
        if not taken and not self.running:
            taken.append(await self.queue.get())
            deadline = time.monotonic() + self._wait_s
            while len(taken) < free:
                remaining = deadline - time.monotonic()
                if remaining <= 0 and self.queue.empty():
                    break
                try:
                    taken.append(self.queue.get_nowait() if not self.queue.empty() else
                                 await asyncio.wait_for(self.queue.get(), remaining))
                except TimeoutError:
                    break
        while len(taken) < free and not self.queue.empty():
            taken.append(self.queue.get_nowait())
        ready = []
        now = time.perf_counter()
        for request in taken:
            if request.future.done():
                continue  # the caller gave up before it started
            if request.adapter in self._adapters:
                request.row = Row(request.prompt_ids, request.sampling,
                                  self._adapters.name_of(request.adapter))
                self.metrics.request_queue_time.observe(now - request.started)
                ready.append(request)
            else:
                self._needs_adapter(request)
        return ready

    def _advance(self, request: Request, token: int) -> bool:
        """Take one new token of `request`; True when its reply is complete."""
        if token == self._eos:
            return True
        piece = request.decoder.feed(token)
        if piece:
            self._send(request, piece)
        request.tokens += 1
        return request.decoder.done or request.tokens >= request.sampling.max_new_tokens

    def _send(self, request: Request, piece: str) -> None:
        request.pieces.put_nowait(piece)

    def _finish(self, request: Request) -> None:
        self._release(request)
        if request.future.done():
            return
        piece = request.decoder.finish()
        if piece:
            self._send(request, piece)
        latency_s = time.perf_counter() - request.started
        request.future.set_result(Generation(
            text=request.decoder.sent, prompt=request.prompt,
            prompt_tokens=len(request.prompt_ids), reply_tokens=request.tokens,
            latency_ms=latency_s * 1000, adapter_version=request.adapter))
        self.metrics.e2e_request_latency.observe(latency_s)
        self.metrics.prompt_tokens.inc(len(request.prompt_ids))
        self.metrics.generation_tokens.inc(request.tokens)
        request.pieces.put_nowait(_END)

    def _release(self, request: Request) -> None:
        self.running.remove(request)
        self._leaving.append(request.row)
        self._adapters.release([request.adapter])

    def _fail_alone(self, request: Request) -> None:
        log.error("a reply by adapter %s failed alone after %d token(s): its logits were not "
                  "finite", request.adapter, request.tokens)
        self._release(request)
        self.metrics.requests_failed.inc()
        fail([request], MODEL_FAILED)

    def _drop_abandoned(self) -> None:
        for request in [r for r in self.running if r.future.done()]:
            self._release(request)

    def _fail_running(self, message: str) -> None:
        failed, self.running, self._leaving = self.running, [], []
        self._adapters.release([r.adapter for r in failed])
        if message == MODEL_FAILED:
            self.metrics.requests_failed.inc(len(failed))
        fail(failed, message)


def fail(requests: list[Request], message: str) -> None:
    for request in requests:
        if not request.future.done():
            request.future.set_exception(GenerationFailed(message))
        request.pieces.put_nowait(_END)

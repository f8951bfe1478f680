"""GPT-2 (+ an optional LoRA adapter) behind a queue: batched generation and adapter hot-swap.

One thread owns the model. Everything that runs the model or changes it (a batch's `generate`,
switching adapters) is a job on that thread, so jobs run one at a time in the order they were
submitted, and a forward pass never overlaps a change to the module tree. The event loop only
queues requests, forms batches and awaits the model thread.

A swap reads and checks the adapter bytes in a worker thread while batches keep running; then
one job on the model thread, between two batches, attaches the adapter under a fresh peft
name, makes it the active one and deletes the old one. A batch reads the adapter in service
when it starts on the model thread, so it runs and reports exactly that version, and the
batch in flight during a swap finishes with the adapter it started with.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch
from peft import LoraConfig, PeftModel, get_peft_model

from bot import dialogue
from bot.adapter_io import AdapterLoadError, ParsedAdapter, attach_adapter, parse_adapter
from bot.dialogue import Turn
from bot.generation import (
    BASE_VERSION,
    EngineBusy,
    Generation,
    GenerationConfig,
    GenerationFailed,
)

log = logging.getLogger(__name__)

_OVERRIDABLE = ("max_new_tokens", "min_new_tokens", "temperature", "top_p", "repetition_penalty")
# Refusals less than this far apart belong to one burst, logged as one summary line.
BUSY_QUIET_S = 1.0


@dataclass(frozen=True)
class Sampling:
    """Generation settings of one request; requests go in one batch only when these match."""

    max_new_tokens: int
    min_new_tokens: int
    temperature: float
    top_p: float
    repetition_penalty: float


@dataclass(frozen=True)
class _Adapter:
    version: str
    peft_name: str | None  # None for the base model


@dataclass
class _Request:
    prompt: str
    prompt_ids: list[int]
    sampling: Sampling
    future: asyncio.Future
    started: float = field(default_factory=time.perf_counter)


class _WholeReplyStream:
    """A ReplyStream whose one piece is the whole reply."""

    def __init__(self, engine: Engine, turns: list[Turn], style: str | None, overrides: dict):
        self._engine, self._turns, self._style, self._overrides = engine, turns, style, overrides
        self.generation: Generation | None = None

    def __aiter__(self):
        return self._pieces()

    async def _pieces(self):
        self.generation = await self._engine.generate(self._turns, self._style,
                                                      **self._overrides)
        yield self.generation.text


class Engine:
    """Batched generation with a hot-swappable LoRA adapter; see the module docstring."""

    def __init__(self, model, tokenizer, config: GenerationConfig):
        """`model` is already on `config.device`; `config.model_name` is what adapters must
        have been trained on."""
        self.model = _as_peft_model(model, config.lora_target_modules).eval()
        self.tokenizer = tokenizer
        self.config = config
        self.model_name: str = config.model_name
        self.device = torch.device(config.device)
        model_config = model.config
        self.n_positions: int = (getattr(model_config, "n_positions", None)
                                 or model_config.max_position_embeddings)
        self.eos_token_id: int = tokenizer.eos_token_id
        self.default_sampling = Sampling(
            max_new_tokens=config.max_new_tokens, min_new_tokens=0,
            temperature=config.temperature, top_p=config.top_p,
            repetition_penalty=config.repetition_penalty)
        if self.n_positions - self.default_sampling.max_new_tokens < 8:
            raise ValueError(f"MAX_NEW_TOKENS={config.max_new_tokens} leaves no room for a "
                             f"prompt in this model's {self.n_positions} positions")
        self.model_calls = 0
        self._active = _Adapter(BASE_VERSION, None)  # changed only on the model thread
        self._names = itertools.count(1)
        self._queue: asyncio.Queue[_Request] = asyncio.Queue(maxsize=config.queue_max)
        self._held: list[_Request] = []  # taken from the queue but left for a later batch
        self._model_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine-model")
        self._worker: asyncio.Task | None = None
        self._swap_lock = asyncio.Lock()
        self._closed = False
        self.refused = 0  # requests turned away with EngineBusy since start
        self._burst: list[float] = []  # [first refusal, last refusal, count] of this burst
        self._burst_timer: asyncio.TimerHandle | None = None

    @classmethod
    def load(cls, config: GenerationConfig) -> Engine:
        """Load `config.model_name` (hub name or local directory) on `config.device`."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if config.device.startswith("cuda"):
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        else:
            dtype = torch.float32
        tokenizer = AutoTokenizer.from_pretrained(config.model_name)
        model = AutoModelForCausalLM.from_pretrained(config.model_name, dtype=dtype)
        return cls(model.to(config.device), tokenizer, config)

    @classmethod
    def from_settings(cls, settings) -> Engine:
        return cls.load(GenerationConfig.from_settings(settings))

    # --- what callers read ----------------------------------------------------------------------

    @property
    def active_version(self) -> str:
        return self._active.version

    @property
    def max_prompt_tokens(self) -> int:
        return self.n_positions - self.default_sampling.max_new_tokens

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._closed:
            raise GenerationFailed("the engine is closed")
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._run_batches(), name="engine-batches")

    async def close(self) -> None:
        """Stop the worker, fail what is still queued, and release the model thread."""
        self._closed = True
        if self._burst_timer is not None:
            self._burst_timer.cancel()
        self._end_burst(closing=True)
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        leftover = self._held[:]
        self._held.clear()
        while not self._queue.empty():
            leftover.append(self._queue.get_nowait())
        for request in leftover:
            if not request.future.done():
                request.future.set_exception(GenerationFailed("the engine is shutting down"))
        # Let a batch already on the model thread finish without blocking the event loop.
        await asyncio.to_thread(self._model_thread.shutdown, wait=True, cancel_futures=True)

    # --- generation -----------------------------------------------------------------------------

    def sampling_for(self, **overrides) -> Sampling:
        """The default sampling with `overrides`; unknown names are refused."""
        unknown = set(overrides) - set(_OVERRIDABLE)
        if unknown:
            raise TypeError(f"unknown generation settings: {sorted(unknown)} "
                            f"(allowed: {', '.join(_OVERRIDABLE)})")
        fields = {name: getattr(self.default_sampling, name) for name in _OVERRIDABLE}
        fields.update(overrides)
        sampling = Sampling(**fields)
        if not 1 <= sampling.max_new_tokens <= self.n_positions - 8:
            raise ValueError(f"max_new_tokens must be between 1 and {self.n_positions - 8}")
        if not 0 <= sampling.min_new_tokens <= sampling.max_new_tokens:
            raise ValueError("min_new_tokens must be between 0 and max_new_tokens")
        if sampling.temperature < 0 or not 0 < sampling.top_p <= 1:
            raise ValueError("temperature must be >= 0 and top_p in (0, 1]")
        if sampling.repetition_penalty <= 0:
            raise ValueError("repetition_penalty must be > 0")
        return sampling

    async def generate(self, turns: list[Turn], style: str | None = None,
                       **overrides) -> Generation:
        """The bot's reply to `turns` (oldest first, ending with the user's message).

        Raises EngineBusy when the queue is full, GenerationFailed when the model call fails,
        and ValueError/PromptTooLong for a dialogue that cannot be served.
        """
        started = time.perf_counter()
        await self.start()
        sampling = self.sampling_for(**overrides)
        self._refuse_if_full()  # before the work of building the prompt
        budget = self.n_positions - sampling.max_new_tokens
        # Building the prompt encodes it several times: keep that off the event loop.
        prompt, prompt_ids = await asyncio.to_thread(self._encode_prompt, turns, style, budget)
        self._refuse_if_full()
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Request(prompt, prompt_ids, sampling, future, started))
        return await future

    def stream(self, turns: list[Turn], style: str | None = None,
               **overrides) -> _WholeReplyStream:
        """The reply of `generate`, as a stream (one piece: a static batch decodes a reply as
        a whole)."""
        return _WholeReplyStream(self, turns, style, overrides)

    def _refuse_if_full(self) -> None:
        # Requests held back for a later batch count too: the bound covers everything waiting.
        if self._queue.qsize() + len(self._held) >= self._queue.maxsize:
            self._count_refusal()
            raise EngineBusy(f"{self._queue.maxsize} requests are already waiting")

    def _count_refusal(self) -> None:
        """Count a refusal; a burst of them is logged once, BUSY_QUIET_S after its last."""
        self.refused += 1
        now = time.monotonic()
        if self._burst:
            self._burst[1], self._burst[2] = now, self._burst[2] + 1
            return
        self._burst = [now, now, 1]
        self._burst_timer = asyncio.get_running_loop().call_later(BUSY_QUIET_S,
                                                                  self._end_burst)

    def _end_burst(self, *, closing: bool = False) -> None:
        if not self._burst:
            return
        first, last, count = self._burst
        wait = last + BUSY_QUIET_S - time.monotonic()
        if wait > 0 and not closing:  # still refusing: look again once it has been quiet
            self._burst_timer = asyncio.get_running_loop().call_later(wait, self._end_burst)
            return
        self._burst, self._burst_timer = [], None
        log.warning("generation queue full (%d waiting): turned away %d request(s) over %.1f s",
                    self._queue.maxsize, count, last - first)

    def _encode_prompt(self, turns: list[Turn], style: str | None,
                       budget: int) -> tuple[str, list[int]]:
        prompt = dialogue.build_prompt(turns, style, self.tokenizer, budget)
        return prompt, self.tokenizer.encode(prompt, add_special_tokens=False)

    async def _next_batch(self) -> list[_Request]:
        """Up to BATCH_MAX_SIZE requests with the same sampling, waiting BATCH_MAX_WAIT_MS at most
        for more after the first; requests with other sampling are held for a later batch."""
        limit = self.config.batch_max_size
        first = self._held.pop(0) if self._held else await self._queue.get()
        batch, kept = [first], []
        for request in self._held:
            (batch if len(batch) < limit and request.sampling == first.sampling
             else kept).append(request)
        self._held = kept
        deadline = time.monotonic() + self.config.batch_max_wait_ms / 1000
        while len(batch) < limit:
            try:
                request = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    request = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            if request.sampling == first.sampling:
                batch.append(request)
            else:
                self._held.append(request)
        return [r for r in batch if not r.future.done()]  # callers that gave up are skipped

    async def _run_batches(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            if not batch:
                continue
            try:
                outputs, version = await loop.run_in_executor(self._model_thread,
                                                              self._generate_batch, batch)
            except asyncio.CancelledError:
                for request in batch:
                    if not request.future.done():
                        request.future.set_exception(GenerationFailed("the engine is shutting "
                                                                      "down"))
                raise
            except Exception:
                log.exception("generation failed for a batch of %d", len(batch))
                for request in batch:
                    if not request.future.done():
                        request.future.set_exception(GenerationFailed(
                            "the model failed to generate a reply"))
                continue
            now = time.perf_counter()
            for request, (text, reply_tokens) in zip(batch, outputs, strict=True):
                if request.future.done():
                    continue
                request.future.set_result(Generation(
                    text=text, prompt=request.prompt, prompt_tokens=len(request.prompt_ids),
                    reply_tokens=reply_tokens, latency_ms=(now - request.started) * 1000,
                    adapter_version=version))

    def _generate_batch(self, batch: list[_Request]) -> tuple[list[tuple[str, int]], str]:
        """Runs on the model thread: one left-padded `generate` call for the whole batch;
        returns (reply text, reply tokens) per request and the adapter version it ran with."""
        adapter = self._active  # only model-thread jobs change it: it holds for the whole batch
        self.model_calls += 1
        width = max(len(r.prompt_ids) for r in batch)
        pad = self.eos_token_id
        input_ids = torch.tensor([[pad] * (width - len(r.prompt_ids)) + r.prompt_ids
                                  for r in batch], device=self.device)
        attention_mask = torch.tensor([[0] * (width - len(r.prompt_ids)) + [1] * len(r.prompt_ids)
                                       for r in batch], device=self.device)
        sampling = batch[0].sampling
        kwargs = dict(max_new_tokens=sampling.max_new_tokens,
                      min_new_tokens=sampling.min_new_tokens or None,
                      repetition_penalty=sampling.repetition_penalty,
                      pad_token_id=pad, eos_token_id=pad)
        if sampling.temperature > 0:
            kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        model = self.model
        if adapter.peft_name is None:
            # No adapter is loaded (the base is served by deleting them all), so the LoRA
            # layers add nothing; peft's own generate would insist on an active adapter.
            model = model.base_model.model
        with torch.inference_mode():
            output = model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        results = []
        for row in output[:, width:].tolist():
            if pad in row:
                row = row[:row.index(pad)]
            text = self.tokenizer.decode(row, skip_special_tokens=False)
            results.append((dialogue.extract_reply(text, self.tokenizer.eos_token), len(row)))
        return results, adapter.version

    # --- adapters -------------------------------------------------------------------------------

    async def swap(self, version: str, adapter_bytes: bytes | None) -> None:
        """Serve `version` from the next batch on; "base" with None serves the bare model.

        Raises AdapterLoadError when the bytes do not load (damaged, another base model, wrong
        shape); the adapter in service then stays as it was.
        """
        if (version == BASE_VERSION) != (adapter_bytes is None):
            raise ValueError('version "base" goes with no bytes, any other version with bytes')
        async with self._swap_lock:
            started = time.perf_counter()
            parsed = None
            if adapter_bytes is not None:
                parsed = await asyncio.to_thread(self._parse_for_this_model, adapter_bytes)
            old = await asyncio.get_running_loop().run_in_executor(
                self._model_thread, self._switch_to, version, parsed)
            log.info("adapter %s -> %s in %.0f ms", old, version,
                     (time.perf_counter() - started) * 1000)

    def _parse_for_this_model(self, blob: bytes) -> ParsedAdapter:
        parsed = parse_adapter(blob)
        if not parsed.base_model:
            raise AdapterLoadError("adapter does not say which base model it was trained on")
        if parsed.base_model != self.model_name:
            raise AdapterLoadError(f"adapter was trained on base model {parsed.base_model!r}, "
                                   f"this engine serves {self.model_name!r}")
        return parsed

    def _switch_to(self, version: str, parsed: ParsedAdapter | None) -> str:
        """Runs on the model thread, between batches: attach, activate, delete the old adapter.

        attach_adapter checks every tensor's name and shape and removes a half-added adapter,
        so a refused one leaves the model as it was. Returns the version served before.
        """
        old = self._active
        if parsed is None:
            new = _Adapter(BASE_VERSION, None)
        else:
            new = _Adapter(version, f"adapter_{next(self._names)}")
            self.model = attach_adapter(self.model, parsed, new.peft_name).eval()
            self.model.set_adapter(new.peft_name, inference_mode=True)
        self._active = new
        if old.peft_name is not None:
            self.model.delete_adapter(old.peft_name)
        return old.version


def _as_peft_model(model, target_modules: tuple[str, ...]):
    """`model` wrapped by peft with no adapter loaded (its LoRA layers then add nothing).

    Wrapping once up front means every adapter is attached the same way, with `add_adapter`,
    and a refused one is removed cleanly; wrapping a plain model is the step that cannot be
    undone when the adapter then fails to load.
    """
    if isinstance(model, PeftModel):
        return model
    placeholder = "engine_placeholder"
    # GPT-2's Conv1D layers need fan_in_fan_out; the real adapters bring their own shapes.
    config = LoraConfig(target_modules=list(target_modules), fan_in_fan_out=True,
                        task_type="CAUSAL_LM")
    wrapped = get_peft_model(model, config, adapter_name=placeholder)
    wrapped.delete_adapter(placeholder)
    return wrapped

"""GPT-2 with LoRA adapters behind a queue: iteration-level batching that mixes adapters, replies
streamed as they are decoded, adapters loaded on demand.

One thread owns the model. Everything that runs the model or changes it (a tick of the running
batch, attaching or deleting an adapter) is a job on that thread, so jobs run one at a time in
the order they were submitted, and a forward pass never overlaps a change to the module tree.
The event loop queues requests, schedules rows (scheduler.py) and awaits the model thread; the
running rows and their key/value cache live on the model thread (kv_batch.py).

Each request names the adapter version that serves it (its server's). Rows of one step mix
versions: one forward with peft's `adapter_names`, one per row. A version not loaded yet is
loaded on demand, off the serving path: its requests wait aside while the bytes are fetched
from the adapter source, checked in a worker thread (bot/core/adapter_sanity.py's static
checks) and attached between ticks, where the probe runs before any row may use it; other
requests keep running meanwhile. At most MAX_LOADED_ADAPTERS stay loaded: the least recently
used one that no running row needs is deleted to make room (adapter_cache.py). A request keeps
the version it started with, so a server's swap or rollback fails none.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor

import torch

from bot.core import dialogue
from bot.core.adapter_io import (
    AdapterLoadError,
    ParsedAdapter,
    attach_adapter,
    parse_adapter,
    wrap_for_adapters,
)
from bot.core.adapter_sanity import NextLogits, Prober
from bot.core.dialogue import Turn
from bot.core.generation import (
    BASE_VERSION,
    AdapterSource,
    EngineBusy,
    Generation,
    GenerationConfig,
    GenerationFailed,
    consumed,
)
from bot.core.metrics import Metrics
from bot.core.reply_decoder import ReplyDecoder, TokenBytes
from bot.engine.adapter_cache import BASE_NAME, AdapterCache
from bot.engine.busy import Refusals
from bot.engine.cpu_bf16 import speed_up as speed_up_half_precision_on_cpu
from bot.engine.kv_batch import KVBatch
from bot.engine.sampler import Sampling
from bot.engine.scheduler import PieceStream, Request, Scheduler, fail
from bot.engine.serving_model import load_serving_model

__all__ = ["Engine", "EngineBusy", "Generation", "GenerationFailed", "Sampling"]

log = logging.getLogger(__name__)

_OVERRIDABLE = ("max_new_tokens", "min_new_tokens", "temperature", "top_p", "repetition_penalty")
# Refusals less than this far apart belong to one burst, logged as one summary line.
BUSY_QUIET_S = 1.0


class Engine:
    """Batched generation with a hot-swappable LoRA adapter; see the module docstring."""

    def __init__(self, model, tokenizer, config: GenerationConfig,
                 adapter_source: AdapterSource | None = None):
        """`model` is already on `config.device`; `config.model_name` is what adapters must
        have been trained on; `adapter_source` gives `load` its bytes (None: base model only)."""
        cache_dtype = None
        if torch.device(config.device).type == "cpu" and model.dtype != torch.float32:
            speed_up_half_precision_on_cpu(model)
            cache_dtype = torch.float32
        self.model = wrap_for_adapters(model, config.lora_target_modules).eval()
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
        self._adapter_source = adapter_source
        self._adapters = AdapterCache(config.max_loaded_adapters)
        self._loads: dict[str, asyncio.Future] = {}  # version -> its load in progress
        self._awaiting_adapter: dict[str, list[Request]] = {}  # version -> its requests
        self._tasks: set[asyncio.Task] = set()
        self._model_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine-model")
        self._token_bytes = TokenBytes(tokenizer)
        self._prober = Prober(tokenizer, self._next_logits, config.device)
        self.metrics = Metrics()  # the runtime's replaces it (use_metrics)
        self.kv = KVBatch(self._forward, model_config.n_layer, self.eos_token_id, self.device,
                          cache_dtype)
        self._scheduler = Scheduler(
            self.kv, self._model_thread, self._adapters, batch_max_size=config.batch_max_size,
            batch_max_wait_ms=config.batch_max_wait_ms, queue_max=config.queue_max,
            eos_token_id=self.eos_token_id, needs_adapter=self._wait_for_adapter,
            metrics=self.metrics)
        self._worker: asyncio.Task | None = None
        self._closed = False
        self._refusals = Refusals(config.queue_max, BUSY_QUIET_S, log, self.metrics)

    @classmethod
    def load_model(cls, config: GenerationConfig,
                   adapter_source: AdapterSource | None = None) -> Engine:
        """Load `config.model_name` (hub name or local directory) on `config.device`, its
        weights' type chosen as serving_model.py says."""
        model, tokenizer = load_serving_model(config)
        return cls(model, tokenizer, config, adapter_source)

    @classmethod
    def from_settings(cls, settings, adapter_source: AdapterSource | None = None) -> Engine:
        return cls.load_model(GenerationConfig.from_settings(settings), adapter_source)

    # --- what callers read ----------------------------------------------------------------------

    @property
    def loaded_versions(self) -> list[str]:
        """The adapter versions loaded now, least recently used first."""
        return self._adapters.versions

    @property
    def admissions(self) -> int:
        """Admissions so far: each starts the requests that joined the batch at one tick, in
        prompt passes grouped by length."""
        return self.kv.admissions

    @property
    def decode_steps(self) -> int:
        """Decode steps so far: each gives every running row one token."""
        return self.kv.decode_steps

    @property
    def refused(self) -> int:
        """Requests turned away with EngineBusy since start."""
        return self._refusals.count

    @property
    def max_prompt_tokens(self) -> int:
        return self.n_positions - self.default_sampling.max_new_tokens

    def use_metrics(self, metrics: Metrics) -> None:
        """Report to `metrics` from now on (the runtime's, served on METRICS_PORT)."""
        self.metrics = self._scheduler.metrics = self._refusals.metrics = metrics
        metrics.watch_queue(lambda: len(self._scheduler.running), self._waiting)

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._closed:
            raise GenerationFailed("the engine is closed")
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._scheduler.run(), name="engine-scheduler")

    async def close(self) -> None:
        """Stop the worker, fail what is still queued, and release the model thread."""
        self._closed = True
        self._refusals.close()
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        leftover = self._scheduler.leftover() + [
            r for waiting in self._awaiting_adapter.values() for r in waiting]
        self._awaiting_adapter.clear()
        fail(leftover, "the engine is shutting down")
        # Let a tick already on the model thread finish without blocking the event loop.
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

    async def generate(self, turns: list[Turn], style: str | None = None, *,
                       adapter: str = BASE_VERSION, **overrides) -> Generation:
        """The reply to `turns` (oldest first, ending with the user's message) by `adapter`:
        the stream of `stream`, consumed.

        Raises EngineBusy when the queue is full, GenerationFailed when the model call fails or
        the adapter cannot be loaded, and ValueError/PromptTooLong for a dialogue that cannot be
        served.
        """
        return await consumed(self.stream(turns, style, adapter=adapter, **overrides))

    def stream(self, turns: list[Turn], style: str | None = None, *,
               adapter: str = BASE_VERSION, **overrides) -> PieceStream:
        """The reply of `generate`, piece by piece as its row decodes it (no piece splits a
        character; the pieces joined are the reply's text). Bad settings raise here; the queue
        bound and the prompt are checked when the iteration starts."""
        sampling = self.sampling_for(**overrides)
        return PieceStream(lambda: self._submit(turns, style, adapter, sampling))

    async def _submit(self, turns: list[Turn], style: str | None, adapter: str,
                      sampling: Sampling) -> Request:
        started = time.perf_counter()
        await self.start()
        self._refuse_if_full()  # before the work of building the prompt
        budget = self.n_positions - sampling.max_new_tokens
        # Building the prompt encodes it several times: keep that off the event loop.
        prompt, prompt_ids = await asyncio.to_thread(self._encode_prompt, turns, style, budget)
        self._refuse_if_full()
        request = Request(prompt, prompt_ids, sampling, adapter,
                          ReplyDecoder(self._token_bytes, self.tokenizer.eos_token),
                          asyncio.get_running_loop().create_future(), started=started)
        self._scheduler.queue.put_nowait(request)
        return request

    def _refuse_if_full(self) -> None:
        # Requests ready to run again or waiting for their adapter count too: the bound covers
        # everything waiting.
        if self._waiting() >= self.config.queue_max:
            self._refusals.add()
            raise EngineBusy(f"{self.config.queue_max} requests are already waiting")

    def _waiting(self) -> int:
        return self._scheduler.waiting + sum(map(len, self._awaiting_adapter.values()))

    def _encode_prompt(self, turns: list[Turn], style: str | None,
                       budget: int) -> tuple[str, list[int]]:
        prompt = dialogue.build_prompt(turns, style, self.tokenizer, budget)
        return prompt, self.tokenizer.encode(prompt, add_special_tokens=False)

    def _forward(self, names: list[str], **inputs) -> torch.Tensor:
        """Runs on the model thread: the logits of one forward pass, each row with its own
        adapter."""
        if all(name == BASE_NAME for name in names):
            # The base alone: its LoRA layers switched off, without peft's per-row hooks (the
            # bare model would still apply the adapter peft calls active).
            adapters_off = (self.model.disable_adapter() if self.model.peft_config
                            else contextlib.nullcontext())
            with adapters_off:
                return self.model.base_model.model(**inputs).logits
        return self.model(**inputs, adapter_names=names).logits

    # --- adapters -------------------------------------------------------------------------------

    async def load(self, version: str, sha256: str | None = None) -> None:
        """See Generator.load: fetch, check and attach `version` (unless loaded from its bytes)."""
        if version in self._adapters and not self._adapters.stale(version, sha256):
            return
        if version not in self._loads:
            self._loads[version] = asyncio.ensure_future(self._attach(version))
        load = self._loads[version]
        try:
            await asyncio.shield(load)
        finally:
            if load.done() and self._loads.get(version) is load:
                del self._loads[version]

    async def _attach(self, version: str) -> None:
        if self._adapter_source is None:
            raise AdapterLoadError("the engine has no adapter source to load it from")
        adapter_bytes = await self._adapter_source(version)
        if version in self._adapters:  # stale: the old weights go once their rows are done
            await self._adapters.retire(version)
        started = time.perf_counter()
        parsed = await asyncio.to_thread(parse_adapter, adapter_bytes, self.model_name)
        name, evicted = self._adapters.plan()
        await asyncio.get_running_loop().run_in_executor(
            self._model_thread, self._attach_on_model_thread, name, parsed, evicted)
        self._adapters.add(version, name, adapter_bytes)
        self.metrics.adapter_loads.inc()
        log.info("adapter %s loaded in %.0f ms%s", version, (time.perf_counter() - started) * 1000,
                 " (evicted the least recently used)" if evicted else "")


    def _wait_for_adapter(self, request: Request) -> None:
        """Set `request` aside until its version is loaded, starting that load once."""
        waiting = self._awaiting_adapter.setdefault(request.adapter, [])
        waiting.append(request)
        if len(waiting) == 1:
            task = asyncio.create_task(self._load_on_demand(request.adapter),
                                       name=f"load-adapter-{request.adapter}")
            self._tasks.add(task)  # the loop keeps only weak references to tasks
            task.add_done_callback(self._tasks.discard)

    async def _load_on_demand(self, version: str) -> None:
        try:
            await self.load(version)
        except Exception as error:  # every kind of failure fails only these requests
            log.error("adapter %s cannot be served: %s", version, error)
            fail(self._awaiting_adapter.pop(version, []),
                 f"adapter {version} cannot be served")
            return
        self._scheduler.requeue(self._awaiting_adapter.pop(version, []))

    def _attach_on_model_thread(self, name: str, parsed: ParsedAdapter,
                                evicted: str | None) -> None:
        """Between ticks: delete the evicted adapter, attach the new one (shapes checked) and
        probe it; a refused one is removed before any row could use it."""
        if evicted is not None:
            self.model.delete_adapter(evicted)
        self.model = attach_adapter(self.model, parsed, name).eval()
        # Rows name their adapter, but peft's forward wants some active adapter loaded.
        self.model.set_adapter(name, inference_mode=True)
        try:
            self._prober.check(name)
        except BaseException:
            self.model.delete_adapter(name)  # peft makes another one active
            raise

    def _next_logits(self, name: str | None) -> NextLogits:
        """For the probe, on the model thread: its rows with adapter `name` (None: base)."""
        return lambda cache, **inputs: self._forward(
            [name or BASE_NAME] * len(inputs["input_ids"]), cache=cache, use_cache=True,
            logits_to_keep=1, **inputs)[:, -1]

"""The servers bench/serve.py compares the engine with: static batching (one `generate` per
batch of the requests that have arrived) and CTranslate2 int8 (when installed)."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from pathlib import Path


class StaticServer:
    """Today's engine: one `generate` per batch of the requests that have arrived."""

    def __init__(self, model, tokenizer, size: int, wait_s: float, sampling: dict):
        self.model, self.tokenizer, self.size, self.wait_s = model, tokenizer, size, wait_s
        self.sampling = sampling
        self.queue: asyncio.Queue = asyncio.Queue()
        self.calls = 0
        self.worker = asyncio.create_task(self._run())

    async def ask(self, prompt_ids: list[int]) -> dict:
        started = time.perf_counter()
        future = asyncio.get_running_loop().create_future()
        self.queue.put_nowait((prompt_ids, future))
        tokens = await future
        latency = (time.perf_counter() - started) * 1000
        return {"ttft": latency, "latency": latency, "tokens": tokens}

    async def _run(self):
        while True:
            batch = [await self.queue.get()]
            await asyncio.sleep(self.wait_s)
            while len(batch) < self.size and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            try:
                counts = await asyncio.to_thread(self._generate, [ids for ids, _ in batch])
            except Exception as error:  # counted by the caller, never hidden
                for _, future in batch:
                    future.set_exception(error)
                continue
            for (_, future), count in zip(batch, counts, strict=True):
                future.set_result(count)

    def _generate(self, prompts: list[list[int]]) -> list[int]:
        import torch

        self.calls += 1
        pad = self.tokenizer.eos_token_id
        width = max(map(len, prompts))
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts],
                           device=self.model.device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts],
                            device=self.model.device)
        with torch.inference_mode():
            out = self.model.generate(input_ids=ids, attention_mask=mask, pad_token_id=pad,
                                      eos_token_id=pad, **self.sampling)
        return [(row != pad).sum().item() for row in out[:, width:]]

    async def close(self):
        self.worker.cancel()


def ctranslate2_runner(model_dir: str, prompts: list[list[int]], tokenizer, max_new: int):
    """A function running one CTranslate2 int8 `generate_batch` burst on `prompts` (returns
    (wall seconds, tokens)), or None without CTranslate2. It uses torch's thread count."""
    try:
        import ctranslate2
    except ImportError:
        return None
    import torch

    out = Path(tempfile.mkdtemp(prefix="bench-ct2-"))
    try:
        ctranslate2.converters.TransformersConverter(model_dir).convert(
            str(out / "int8"), quantization="int8", force=True)
        # As many threads as torch has (--threads): CTranslate2's default is every core.
        generator = ctranslate2.Generator(str(out / "int8"), device="cpu", compute_type="int8",
                                          intra_threads=torch.get_num_threads())
    finally:
        shutil.rmtree(out, ignore_errors=True)  # the generator holds the weights in memory
    tokens = [tokenizer.convert_ids_to_tokens(p) for p in prompts]

    async def run_once():
        started = time.perf_counter()
        results = generator.generate_batch(tokens, max_length=max_new, min_length=max_new,
                                           sampling_topk=50, sampling_topp=0.9,
                                           sampling_temperature=0.8, repetition_penalty=1.2,
                                           include_prompt_in_result=False)
        return time.perf_counter() - started, sum(len(r.sequences_ids[0]) for r in results)
    return run_once

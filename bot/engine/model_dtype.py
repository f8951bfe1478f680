"""The type of the served model's weights (MODEL_DTYPE), chosen by measurement on a CPU.

`auto` on a GPU: bfloat16 where it has it, else float16. `auto` on a CPU: whichever of float32
and bfloat16 runs this model's own decode-step matrix products faster on this host, measured
at start-up. A CPU flag does not tell: with avx512_bf16 on both, bf16 paid 1.6x on an AMD EPYC
but ran its GEMMs at 0.45x float32 on an Intel Xeon (1.76x slower steps). bf16 is taken only when
it is clearly faster (BF16_MARGIN), so `auto` is never slower than float32. The result is kept
for the life of the process (the same shapes are not measured twice). `int8` (bot/engine/int8.py)
is never chosen by `auto`: it changes the model's output slightly, so an operator opts in.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections import Counter

log = logging.getLogger(__name__)

DTYPES = ("auto", "float32", "bfloat16", "float16", "int8")
# bf16 must take at most this share of float32's time to be chosen: measurement noise on a
# busy host must not pick the slower type.
BF16_MARGIN = 0.9
PROBE_REPEATS = 3  # float32 and bf16 timed alternately, this many times each; medians compared

_chosen: dict[tuple, tuple[str, dict[str, float]]] = {}  # (shapes, rows, threads) -> choice


def resolve_dtype(setting: str, device: str):
    """The torch dtype to load the weights in for MODEL_DTYPE `setting` on `device` (cpu,
    cuda, cuda:N, mps): int8 loads float32 and quantizes after; `auto` on a CPU loads float32
    and `choose_cpu_dtype` decides."""
    import torch

    if setting == "int8":
        return torch.float32
    if setting != "auto":
        return getattr(torch, setting)
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def linear_shapes(model) -> Counter[tuple[int, int]]:
    """(in, out) of every matrix a decode step multiplies by, with how many there are: the
    GPT-2 blocks' Conv1D (weight [in, out]), any nn.Linear (weight [out, in]) and the LM head."""
    import torch
    from transformers.pytorch_utils import Conv1D

    shapes: Counter[tuple[int, int]] = Counter()
    for module in model.modules():
        if isinstance(module, Conv1D):
            shapes[tuple(module.weight.shape)] += 1
        elif isinstance(module, torch.nn.Linear):
            shapes[tuple(reversed(module.weight.shape))] += 1
    return shapes


def operands(shapes: Counter[tuple[int, int]], dtype, rows: int) -> list[tuple]:
    """(input [rows, in], weight [out, in], count) in `dtype` for each of `shapes`."""
    import torch

    return [(torch.randn(rows, fan_in).to(dtype), torch.randn(fan_out, fan_in).to(dtype), count)
            for (fan_in, fan_out), count in shapes.items()]


def time_linears(products: list[tuple]) -> float:
    """Seconds for one decode step's matrix products (`operands`: each timed once, times its
    count), after one untimed warm-up product each."""
    import torch

    total = 0.0
    with torch.inference_mode():
        for x, weight, count in products:
            torch.nn.functional.linear(x, weight)
            started = time.perf_counter()
            torch.nn.functional.linear(x, weight)
            total += (time.perf_counter() - started) * count
    return total


def choose_cpu_dtype(model, rows: int) -> tuple[str, dict[str, float]]:
    """'float32' or 'bfloat16' for `model` decoding `rows` rows per step on this CPU, and the
    measured milliseconds per step's matrix products of each; logged."""
    import torch

    shapes = linear_shapes(model)
    key = (tuple(sorted(shapes.items())), rows, torch.get_num_threads())
    if key in _chosen:
        return _chosen[key]
    products = {name: operands(shapes, getattr(torch, name), rows)
                for name in ("float32", "bfloat16")}
    times: dict[str, list[float]] = {name: [] for name in products}
    for repeat in range(PROBE_REPEATS):
        # Alternate which goes first, so a change of load favours neither.
        order = ("float32", "bfloat16") if repeat % 2 == 0 else ("bfloat16", "float32")
        for name in order:
            times[name].append(time_linears(products[name]))
    figures = {name: statistics.median(seconds) * 1000 for name, seconds in times.items()}
    chosen = ("bfloat16" if figures["bfloat16"] <= BF16_MARGIN * figures["float32"]
              else "float32")
    log.info("MODEL_DTYPE=auto on this CPU: %s (matrix products of a %d-row decode step: "
             "float32 %.1f ms, bfloat16 %.1f ms, %d torch threads)", chosen, rows,
             figures["float32"], figures["bfloat16"], torch.get_num_threads())
    _chosen[key] = chosen, figures
    return chosen, figures

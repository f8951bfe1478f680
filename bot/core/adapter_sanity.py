"""The checks every adapter passes before it may serve: publish, load, rollback and start-up all
go through them, so a bad file never serves (and never reaches a batch other servers share).

Static checks, on the parsed blob (`check_static`, called by `adapter_io.parse_adapter`):

- plain LoRA on GPT-2's block layers only (c_attn, c_proj, c_fc): no DoRA, no trained biases,
  no embedding or extra tensors, no initialisation that rewrites the base weights (PiSSA,
  OLoRA, ...), which would change the model every other server shares;
- rank at most MAX_RANK (the largest LORA_RANK the settings allow), checked before peft
  allocates anything;
- finite weights;
- a bounded effective scale: lora_alpha / r (alpha / sqrt(r) with rsLoRA) at most MAX_SCALE,
  and the weight change each layer gets, scale * B @ A, with an RMS of at most MAX_CHANGE_RMS.
  Measured on the tiny GPT-2 with the default LORA_RANK 8 / LORA_ALPHA 16: trainer-made
  adapters change their layers by an RMS of 0.008-0.27 (learning rate 1e-3 to SEARCH_LR_MAX's
  1e-2), 17 at a learning rate of 0.1; the tests' random adapters by 1.5. The bounds are far
  above anything trained and far below what breaks a forward pass.

The probe, where a model is (`greedy_probe` + `check_probe`; the engine runs it when it
attaches an adapter, the trainer before it publishes): a few fixed prompts, a few greedy
tokens each. Every logit must be finite, and the replies must not be degenerate: an adapter
that answers every prompt with one token over and over (the collapse of a model whose
activations an adapter swamps; an empty reply, end-of-text only, counts too) is refused.
The base model's replies are the yardstick: only where they run on without repeating a token
can collapse be told from the model's own babble (a random tiny GPT-2 repeats one token per
prompt, and an epoch of training on it makes that one token the same for every prompt), so
with a base model that repeats itself the probe checks the logits only. Replies that merely
resemble each other pass: a server may well have taught its bot one canned answer.

A refusal is `AdapterRefused`: an AdapterLoadError whose `check` names the failed check and
whose message is one line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import re
from collections.abc import Callable

import torch
from peft import LoraConfig
from peft.utils.other import get_pattern_key
from transformers.cache_utils import DynamicCache

from bot.core import dialogue
from bot.core.generation import AdapterLoadError

MAX_RANK = 256
MAX_SCALE = 64.0
MAX_CHANGE_RMS = 32.0
BLOCK_TARGETS = frozenset({"c_attn", "c_proj", "c_fc"})  # GPT-2's Conv1D layers
_LORA_KEY = re.compile(r"base_model\.model\.(transformer\.h\.\d+\.(?:attn|mlp)\."
                       r"(?:c_attn|c_proj|c_fc))\.lora_([AB])\.weight")
# LoraConfig fields that may take any value: shape, scaling and bookkeeping. Every other field
# changes what the adapter does (DoRA, biases, extra modules, special initialisations) and must
# keep peft's default.
_FREE_FIELDS = frozenset({
    "task_type", "peft_type", "auto_mapping", "peft_version", "base_model_name_or_path",
    "revision", "inference_mode", "r", "target_modules", "exclude_modules", "lora_alpha",
    "lora_dropout", "fan_in_fan_out", "use_rslora", "layers_to_transform", "layers_pattern",
    "rank_pattern", "alpha_pattern", "megatron_core", "runtime_config", "qalora_group_size",
    "init_lora_weights"})
_PLAIN_INIT = (True, False, "gaussian")  # initialisations that leave the base weights alone
_EMPTY = (None, False, "", "none", {}, [])

PROBE_PROMPTS = ("Hello, how are you today?", "请问你们几点开门？", "My order 4417 never arrived.")
PROBE_TOKENS = 4
PROBE_BUDGET = 64  # tokens of a probe prompt at most


class AdapterRefused(AdapterLoadError):
    """An adapter failed a check; `check` names it ("non-finite weights", ...)."""

    def __init__(self, check: str, detail: str):
        super().__init__(f"{check}: {detail}")
        self.check = check


# --- static checks ------------------------------------------------------------------------------

def check_static(config: LoraConfig, tensors: dict[str, torch.Tensor],
                 unknown_fields: dict | None = None) -> None:
    """Refuse (AdapterRefused) an adapter that is not plain, small and finite; see the module."""
    check_config(config, unknown_fields or {})
    modules = _modules(tensors)
    for key, tensor in tensors.items():
        bad = int((~torch.isfinite(tensor)).sum())
        if bad:
            raise AdapterRefused("non-finite weights",
                                 f"{bad} NaN or infinite value(s) in {_short(key)}")
    for module, pair in modules.items():
        scale = _scale(config, module)
        if not (math.isfinite(scale) and abs(scale) <= MAX_SCALE):
            raise AdapterRefused("scale too large", f"lora_alpha / r is {scale:.3g} at "
                                                    f"{module} (at most {MAX_SCALE:g})")
        rms = _change_rms(pair, scale)
        if not (math.isfinite(rms) and rms <= MAX_CHANGE_RMS):
            raise AdapterRefused("weights too large", f"the change to {module} has an RMS of "
                                                      f"{rms:.3g} (at most {MAX_CHANGE_RMS:g})")


def check_config(config: LoraConfig, unknown_fields: dict) -> None:
    """Plain LoRA on block layers with a rank within MAX_RANK (before anything is allocated)."""
    default = LoraConfig()
    for name in sorted({f.name for f in dataclasses.fields(LoraConfig)} - _FREE_FIELDS):
        if getattr(config, name) != getattr(default, name, None):
            raise AdapterRefused("unsupported config", f"{name}={getattr(config, name)!r} "
                                                       "(this engine serves plain LoRA only)")
    for name, value in sorted(unknown_fields.items()):
        if value not in _EMPTY:
            raise AdapterRefused("unsupported config", f"{name}={value!r} is unknown to this "
                                                       "version of peft")
    if config.init_lora_weights not in _PLAIN_INIT:
        raise AdapterRefused("unsupported config", f"init_lora_weights="
                                                   f"{config.init_lora_weights!r} rewrites the "
                                                   "base model's weights")
    targets = config.target_modules
    if isinstance(targets, str) or not targets or not set(targets) <= BLOCK_TARGETS:
        raise AdapterRefused("unsupported config", f"target_modules={targets!r} (only "
                                                   f"{', '.join(sorted(BLOCK_TARGETS))})")
    for rank in [config.r, *config.rank_pattern.values()]:
        if not isinstance(rank, int) or not 1 <= rank <= MAX_RANK:
            raise AdapterRefused("rank too large", f"rank {rank!r} (at most {MAX_RANK})")


def _modules(tensors: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """module name -> {"A": lora_A, "B": lora_B}; any other tensor is refused."""
    modules: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        match = _LORA_KEY.fullmatch(key)
        if match is None or not tensor.is_floating_point() or tensor.dim() != 2:
            raise AdapterRefused("unexpected tensors", f"{key} is not a LoRA weight of a "
                                                       "transformer block")
        rank = tensor.shape[0 if match[2] == "A" else 1]
        if rank > MAX_RANK:
            raise AdapterRefused("rank too large", f"{_short(key)} has rank {rank} (at most "
                                                   f"{MAX_RANK})")
        modules.setdefault(match[1], {})[match[2]] = tensor
    return modules


def _scale(config: LoraConfig, module: str) -> float:
    """What peft multiplies this module's B @ A by (its rank and alpha patterns applied)."""
    rank = config.rank_pattern.get(get_pattern_key(config.rank_pattern.keys(), module),
                                   config.r)
    alpha = config.alpha_pattern.get(get_pattern_key(config.alpha_pattern.keys(), module),
                                     config.lora_alpha)
    try:
        return float(alpha) / (math.sqrt(rank) if config.use_rslora else rank)
    except (TypeError, ValueError, ZeroDivisionError):
        return math.inf


def _change_rms(pair: dict[str, torch.Tensor], scale: float) -> float:
    """RMS of scale * B @ A without forming it: |BA|^2 = sum((A A^T) * (B^T B)). A pair that
    is incomplete or disagrees on its rank is left to the shape check when it is attached."""
    a, b = pair.get("A"), pair.get("B")
    if a is None or b is None or a.shape[0] != b.shape[1]:
        return 0.0
    a, b = a.double(), b.double()
    squared = float(((a @ a.T) * (b.T @ b)).sum())
    return abs(scale) * math.sqrt(max(squared, 0.0) / (a.shape[1] * b.shape[0]))


def _short(key: str) -> str:
    return key.removeprefix("base_model.model.").removesuffix(".weight")


# --- the probe ----------------------------------------------------------------------------------

# forward(cache, input_ids=, attention_mask=, position_ids=) -> the logits [rows, vocab] of
# each row's next token: the prompts' pass, then one token a row at a time on the same cache.
NextLogits = Callable[..., torch.Tensor]


def probe_prompt_ids(tokenizer) -> list[list[int]]:
    """The probe prompts as the bot serves them (the one prompt format)."""
    return [tokenizer.encode(dialogue.build_prompt([dialogue.Turn("user", text)], None,
                                                   tokenizer, PROBE_BUDGET),
                             add_special_tokens=False)
            for text in PROBE_PROMPTS]


def greedy_probe(next_logits: NextLogits, prompts: list[list[int]], who: str = "the adapter",
                 device: torch.device | str = "cpu") -> list[tuple[int, ...]]:
    """PROBE_TOKENS greedy tokens after each prompt, the prompts left-padded into one batch;
    AdapterRefused at the first non-finite logit."""
    width = max(map(len, prompts))
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts], device=device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # each row counts from its first token
    cache, replies = DynamicCache(), []
    for _ in range(PROBE_TOKENS):
        logits = next_logits(cache, input_ids=ids, attention_mask=mask,
                             position_ids=positions).float()
        broken = (~torch.isfinite(logits).all(dim=-1)).nonzero()
        if len(broken):
            raise AdapterRefused("non-finite logits", f"{who} gives NaN or infinite logits "
                                                      f"on probe prompt {int(broken[0]) + 1}")
        ids = logits.argmax(dim=-1, keepdim=True)
        replies.append(ids)
        mask = torch.cat([mask, torch.ones_like(ids)], dim=1)
        positions = positions[:, -1:] + 1
    return [tuple(reply) for reply in torch.cat(replies, dim=1).tolist()]


def check_probe(adapter: list[tuple[int, ...]], base: list[tuple[int, ...]]) -> None:
    """Refuse replies that are one token over and over for every prompt, where the base
    model's replies repeat no token back to back (see the module docstring)."""
    collapsed = len({token for reply in adapter for token in reply}) == 1
    base_repeats = any(a == b for reply in base for a, b in itertools.pairwise(reply))
    if collapsed and not base_repeats:
        raise AdapterRefused("degenerate text", f"every probe prompt gets token "
                                                f"{adapter[0][0]} over and over")


class Prober:
    """The probe for one model: the base model's replies once, then each adapter's against
    them. `next_logits_for(adapter)` gives the NextLogits of that adapter (None: the base)."""

    def __init__(self, tokenizer, next_logits_for: Callable[[str | None], NextLogits],
                 device: torch.device | str = "cpu"):
        self._prompts = probe_prompt_ids(tokenizer)
        self._next_logits_for = next_logits_for
        self._device = device
        self._base: list[tuple[int, ...]] | None = None

    def base_replies(self) -> list[tuple[int, ...]]:
        """The base model's probe replies (probed on the first call)."""
        if self._base is None:
            with torch.inference_mode():
                self._base = greedy_probe(self._next_logits_for(None), self._prompts,
                                          "the base model", self._device)
        return self._base

    def check(self, adapter: str) -> None:
        """Refuse (AdapterRefused) the adapter `adapter` if it fails the probe."""
        base = self.base_replies()
        with torch.inference_mode():
            replies = greedy_probe(self._next_logits_for(adapter), self._prompts,
                                   device=self._device)
            check_probe(replies, base)


def probe_model(model, tokenizer) -> None:
    """The probe on a peft model whose active adapter is the one checked (the trainer's and
    the publish command's way; the engine probes its shared model with its own Prober)."""
    device = next(model.parameters()).device

    def next_logits_for(adapter: str | None) -> NextLogits:
        def next_logits(cache: DynamicCache, **inputs) -> torch.Tensor:
            off = model.disable_adapter() if adapter is None else contextlib.nullcontext()
            with off:
                return model(**inputs, cache=cache, use_cache=True,
                             logits_to_keep=1).logits[:, -1]
        return next_logits

    Prober(tokenizer, next_logits_for, device).check("active")

"""The running rows and their key/value cache, on the model thread (iteration-level batching).

Each tick: finished rows leave, every running row decodes one token, then newcomers are
prefilled on their own and spliced into the running batch. Rows are left-padded to one cache
length with an attention mask, and every row has its own position ids, so a row's tokens do not
depend on its neighbours (GPT-2 has absolute positions: a padded row must still count from 0).
When rows leave, cache columns that only padding uses any more are cut off, so the cache is
never longer than the longest running row (prompt + reply, within the model's positions).

Only the model thread touches this object.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers.cache_utils import DynamicCache, DynamicLayer

from bot.engine.sampler import NO_TOKEN, Sampling, next_tokens

GROW = 64  # cache columns added at a time, so a decode step writes one column in place
PAD_SLACK = 8  # prompts this many tokens apart (or a quarter of the longest) share a pass


class _GrowingLayer(DynamicLayer):
    """A cache layer that writes new keys/values into spare room instead of concatenating
    (transformers' DynamicLayer copies the whole cache on every step). `dtype`: what it
    stores, when not the model's (float32 for half-precision weights on a CPU, cpu_bf16.py)."""

    dtype: torch.dtype | None = None

    def lazy_initialization(self, key_states, value_states) -> None:
        self.device, self.is_initialized = key_states.device, True
        self._keys = self._values = None
        self.length = 0

    def update(self, key_states, value_states, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.length + key_states.shape[-2]
        if self._keys is None or end > self._keys.shape[-2]:
            self._reserve(key_states, end + GROW)
        self._keys[:, :, self.length:end] = key_states
        self._values[:, :, self.length:end] = value_states
        self.length = end
        self.keys, self.values = self._keys[:, :, :end], self._values[:, :, :end]
        return self.keys, self.values

    def _reserve(self, like: torch.Tensor, room: int) -> None:
        rows, heads, _, dim = like.shape
        dtype = self.dtype or like.dtype
        keys = like.new_empty((rows, heads, room, dim), dtype=dtype)
        values = like.new_empty((rows, heads, room, dim), dtype=dtype)
        if self._keys is not None and self.length:
            keys[:, :, :self.length] = self._keys[:, :, :self.length]
            values[:, :, :self.length] = self._values[:, :, :self.length]
        self._keys, self._values = keys, values

    def add_rows(self, keys: torch.Tensor, values: torch.Tensor, length: int) -> None:
        """Rows `keys`/`values` [rows, heads, columns, dim] added below the rows held, both
        right-aligned to `length` columns with zeros on the left, in one new buffer: each
        cache entry is copied once (padding, concatenating and re-reserving copied it 4 times)."""
        held_rows, heads, _, dim = self._keys.shape
        shape = (held_rows + keys.shape[0], heads, length + GROW, dim)
        buffers = self._keys.new_empty(shape), self._values.new_empty(shape)
        for buffer, held, added in zip(buffers, (self.keys, self.values), (keys, values),
                                       strict=True):
            for part, states in ((buffer[:held_rows], held), (buffer[held_rows:], added)):
                start = length - states.shape[-2]
                part[:, :, :start].zero_()
                part[:, :, start:length] = states
        self._keys, self._values = buffers
        self.length = length
        self.keys, self.values = self._keys[:, :, :length], self._values[:, :, :length]

    def replace(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Hold exactly `keys`/`values` (rows spliced in or dropped, columns trimmed)."""
        self.lazy_initialization(keys, values)
        self.update(keys, values)


class _RowCache(DynamicCache):
    def __init__(self, layers: int, dtype: torch.dtype | None):
        super().__init__()
        self.layers = [_GrowingLayer() for _ in range(layers)]
        for layer in self.layers:
            layer.dtype = dtype


@dataclass(eq=False)
class Row:
    """One request's row: what the model thread needs to decode it."""

    prompt_ids: list[int]
    sampling: Sampling
    adapter_name: str
    generated: int = 0  # new tokens so far


Forward = Callable[..., torch.Tensor]  # (adapter names per row, **model inputs) -> logits


class KVBatch:
    def __init__(self, forward: Forward, layers: int, eos_token_id: int, device: torch.device,
                 cache_dtype: torch.dtype | None = None):
        self._forward = forward
        self._layers = layers
        self._cache_dtype = cache_dtype  # None: the model's
        self._eos = eos_token_id
        self._device = device
        self.rows: list[Row] = []
        self.decode_steps = 0
        self.prefills = 0  # prompt passes
        self.admissions = 0  # ticks that took newcomers in (one or more prompt passes each)
        self._reset()

    def _reset(self) -> None:
        self.rows = []
        self.cache: _RowCache | None = None
        # Per row: cache mask, last token, position of the next token, tokens so far (for the
        # repetition penalty; left-filled with repeats of the row's first token).
        self.mask = self.last = self.positions = self.history = None

    @property
    def length(self) -> int:
        """The cache length (columns) of the running batch."""
        return 0 if self.mask is None else self.mask.shape[1]

    def tick(self, leaving: list[Row], joining: list[Row],
             first_tokens: Callable[[list[tuple[Row, int]]], None] | None = None,
             ) -> list[tuple[Row, int]]:
        """Drop `leaving`; prefill `joining` (in groups of similar length), splice them in
        and hand their first tokens to `first_tokens` at once (a newcomer's first words need
        not wait for the decode step); then decode one token for every row: (row, its new
        token), NO_TOKEN for a row whose logits were not finite (its caller fails it alone;
        the row decodes end-of-text until it is dropped). A row may decode a token its caller
        no longer needs (it ended at its first): dropped at the next tick. On an exception the
        batch is emptied (the caller fails its rows)."""
        try:
            with torch.inference_mode():
                if leaving:
                    self._drop(leaving)
                self.admissions += bool(joining)
                for group in _similar_lengths(joining):
                    first = self._prefill(group)
                    if first_tokens is not None:
                        first_tokens(first)
                return self._decode() if self.rows else []
        except BaseException:
            self._reset()
            raise

    def _decode(self) -> list[tuple[Row, int]]:
        self.decode_steps += 1
        ones = torch.ones((len(self.rows), 1), dtype=self.mask.dtype, device=self._device)
        self.mask = torch.cat([self.mask, ones], dim=1)
        logits = self._forward([r.adapter_name for r in self.rows], input_ids=self.last[:, None],
                               attention_mask=self.mask, position_ids=self.positions[:, None],
                               cache=self.cache, use_cache=True, logits_to_keep=1)
        self.positions += 1
        tokens = next_tokens(logits[:, -1], self.history, [r.sampling for r in self.rows],
                             [r.generated for r in self.rows], self._eos)
        self.last = self._usable(tokens)
        self.history = torch.cat([self.history, self.last[:, None]], dim=1)
        return _count(self.rows, tokens)

    def _prefill(self, joining: list[Row]) -> list[tuple[Row, int]]:
        self.prefills += 1
        width = max(len(r.prompt_ids) for r in joining)
        ids = torch.tensor([[self._eos] * (width - len(r.prompt_ids)) + r.prompt_ids
                            for r in joining], device=self._device)
        mask = torch.tensor([[0] * (width - len(r.prompt_ids)) + [1] * len(r.prompt_ids)
                             for r in joining], device=self._device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = _RowCache(self._layers, self._cache_dtype)
        logits = self._forward([r.adapter_name for r in joining], input_ids=ids,
                               attention_mask=mask, position_ids=positions, cache=cache,
                               use_cache=True, logits_to_keep=1)
        first = torch.tensor([r.prompt_ids[0] for r in joining], device=self._device)
        history = torch.where(mask.bool(), ids, first[:, None])
        tokens = next_tokens(logits[:, -1], history, [r.sampling for r in joining],
                             [0] * len(joining), self._eos)
        usable = self._usable(tokens)
        self._splice(joining, cache, mask, positions[:, -1] + 1, usable,
                     torch.cat([history, usable[:, None]], dim=1))
        return _count(joining, tokens)

    def _usable(self, tokens: torch.Tensor) -> torch.Tensor:
        """`tokens` with end-of-text for NO_TOKEN: a failed row stays a valid row until it
        leaves."""
        return tokens.masked_fill(tokens == NO_TOKEN, self._eos)

    def _splice(self, joining: list[Row], cache: _RowCache, mask: torch.Tensor,
                positions: torch.Tensor, last: torch.Tensor, history: torch.Tensor) -> None:
        if not self.rows:
            self.rows, self.cache, self.mask = list(joining), cache, mask
            self.positions, self.last, self.history = positions, last, history
            return
        length = max(self.length, mask.shape[1])
        for old, new in zip(self.cache.layers, cache.layers, strict=True):
            old.add_rows(new.keys, new.values, length)
        self.mask = torch.cat([F.pad(self.mask, (length - self.length, 0)),
                               F.pad(mask, (length - mask.shape[1], 0))])
        self.positions = torch.cat([self.positions, positions])
        self.last = torch.cat([self.last, last])
        width = max(self.history.shape[1], history.shape[1])
        self.history = torch.cat([_left_fill(self.history, width), _left_fill(history, width)])
        self.rows += joining

    def _drop(self, leaving: list[Row]) -> None:
        gone = set(map(id, leaving))
        keep = [i for i, row in enumerate(self.rows) if id(row) not in gone]
        if not keep:
            self._reset()
            return
        index = torch.tensor(keep, device=self._device)
        self.mask = self.mask[index]
        # Columns no remaining row uses (its padding) go: the cache shrinks with its rows.
        start = int(self.mask.any(dim=0).nonzero()[0])
        self.mask = self.mask[:, start:]
        for layer in self.cache.layers:
            layer.replace(layer.keys[index, :, start:], layer.values[index, :, start:])
        self.rows = [self.rows[i] for i in keep]
        self.positions, self.last = self.positions[index], self.last[index]
        longest = max(len(r.prompt_ids) + r.generated for r in self.rows)
        self.history = self.history[index, -longest:]


def _similar_lengths(rows: list[Row]) -> list[list[Row]]:
    """`rows` in groups of similar prompt length, longest first: each group is one prompt
    pass, and padding a 12-token prompt to 95 would cost more than a pass of its own."""
    groups: list[list[Row]] = []
    for row in sorted(rows, key=lambda r: len(r.prompt_ids), reverse=True):
        width = len(groups[-1][0].prompt_ids) if groups else 0
        if groups and width - len(row.prompt_ids) <= max(PAD_SLACK, width // 4):
            groups[-1].append(row)
        else:
            groups.append([row])
    return groups


def _left_fill(history: torch.Tensor, width: int) -> torch.Tensor:
    """[rows, length] widened to `width` with repeats of each row's first token."""
    extra = width - history.shape[1]
    return history if extra == 0 else torch.cat([history[:, :1].expand(-1, extra), history], 1)


def _count(rows: list[Row], tokens: torch.Tensor) -> list[tuple[Row, int]]:
    for row in rows:
        row.generated += 1
    return list(zip(rows, tokens.tolist(), strict=True))

"""The adapter checks on their own: each bad kind is refused by the check named for it, good
adapters pass, the probe's degeneracy rule, and the sampler's per-row isolation (real torch,
peft and safetensors on the tiny GPT-2)."""

from __future__ import annotations

import math

import pytest
import torch
from bad_adapters import bad_adapters, reforged

from bot.core.adapter_io import parse_adapter
from bot.core.adapter_sanity import (
    MAX_CHANGE_RMS,
    MAX_SCALE,
    AdapterRefused,
    check_probe,
)
from bot.core.config import load_settings
from bot.core.generation import AdapterLoadError
from bot.engine.sampler import NO_TOKEN, Sampling, next_tokens

# Kinds the static checks refuse; "wrong shapes" needs a model to attach to, "collapse" the
# probe (tests/integration/test_sane_adapters.py takes every kind through a model).
STATIC = ["NaN weights", "Inf weights", "lora_alpha 1e38", "weights x100", "2^63 header length",
          "junk header", "rank 4096, partial tensors", "rank 300", "wte target", "DoRA"]


@pytest.fixture(scope="module")
def kinds(tiny_model_dir, blobs):
    return bad_adapters(tiny_model_dir, load_settings(_env_file=None), blobs["v1"],
                        blobs["other_forged"])


@pytest.mark.parametrize("kind", STATIC)
def test_each_bad_kind_is_refused_by_its_check_in_one_line(kinds, kind):
    blob, check = kinds[kind]
    with pytest.raises(AdapterRefused) as refused:
        parse_adapter(blob)
    assert refused.value.check == check
    assert str(refused.value).startswith(f"{check}: ") and "\n" not in str(refused.value)
    assert isinstance(refused.value, AdapterLoadError)  # every caller already catches these


def test_the_tests_adapters_and_their_own_bounds_pass(blobs, tiny_model_dir):
    for name in ("v1", "v2"):
        assert parse_adapter(blobs[name], str(tiny_model_dir)).tensors
    # Scale and weight change right at their bounds pass; a little above, they do not.
    at_scale = reforged(blobs["v1"], config={"lora_alpha": MAX_SCALE * 8, "r": 8},
                        tensors=lambda key, t: t * 0)
    assert parse_adapter(at_scale).config.lora_alpha == MAX_SCALE * 8
    with pytest.raises(AdapterRefused, match="scale too large"):
        parse_adapter(reforged(at_scale, config={"lora_alpha": MAX_SCALE * 8 + 1}))


def test_the_weight_change_bound_is_the_rms_of_scale_times_b_a(blobs):
    parsed = parse_adapter(blobs["v1"])
    scale = parsed.config.lora_alpha / parsed.config.r
    key = next(k for k in parsed.tensors if k.endswith("h.0.attn.c_attn.lora_A.weight"))
    a, b = parsed.tensors[key], parsed.tensors[key.replace("lora_A", "lora_B")]
    rms = float((scale * b @ a).pow(2).mean().sqrt())
    worst = MAX_CHANGE_RMS / rms  # this factor on A alone puts that layer at the bound

    def grow(factor):
        return lambda k, t: t * factor if k == key else t
    parse_adapter(reforged(blobs["v1"], tensors=grow(worst * 0.99)))
    with pytest.raises(AdapterRefused, match=r"weights too large: the change to "
                                             r"transformer\.h\.0\.attn\.c_attn"):
        parse_adapter(reforged(blobs["v1"], tensors=grow(worst * 1.01)))


def test_another_base_model_is_named(blobs):
    with pytest.raises(AdapterRefused) as refused:
        parse_adapter(blobs["v1"], "gpt2")
    assert refused.value.check == "another base model" and "'gpt2'" in str(refused.value)


def test_the_probe_refuses_collapse_only_where_the_base_model_does_not_repeat_itself():
    fluent = [(5, 6, 7, 8), (9, 10, 11, 12), (13, 14, 15, 16)]
    babbling = [(5, 5, 5, 5), (9, 10, 10, 10), (13, 13, 13, 13)]
    collapsed = [(3, 3, 3, 3)] * 3
    with pytest.raises(AdapterRefused, match="degenerate text: every probe prompt gets token 3"):
        check_probe(collapsed, fluent)
    check_probe(collapsed, babbling)  # a babbling base: collapse cannot be told from it
    check_probe([(3, 4, 3, 4)] * 3, fluent)  # one canned answer for every prompt is allowed
    check_probe([(3, 3, 3, 3), (3, 3, 3, 3), (3, 3, 3, 4)], fluent)


def test_a_row_with_non_finite_logits_gets_no_token_and_its_neighbours_are_untouched():
    torch.manual_seed(0)
    logits = torch.randn(4, 50) * 3
    history = torch.randint(0, 50, (4, 6))
    greedy = Sampling(8, 0, 0.0, 1.0, 1.2)
    sampled = Sampling(8, 0, 0.8, 0.9, 1.2)
    samplings = [greedy, sampled, greedy, sampled]
    alone = [next_tokens(logits[i:i + 1].clone(), history[i:i + 1], [samplings[i]], [2], 0)
             for i in (0, 2)]
    for bad_row, poison in ((1, math.nan), (2, math.inf), (3, -math.inf)):
        poisoned = logits.clone()
        poisoned[bad_row, 7] = poison
        torch.manual_seed(1)
        tokens = next_tokens(poisoned, history, samplings, [2] * 4, 0)
        assert tokens[bad_row] == NO_TOKEN
        for i, token in zip((0, 2), alone, strict=True):
            if i != bad_row:
                assert tokens[i] == token[0]  # greedy neighbours: what they get on their own
        assert all(0 <= t < 50 for i, t in enumerate(tokens.tolist()) if i != bad_row)


def test_a_temperature_that_overflows_fails_its_row_only():
    logits = torch.tensor([[3e38, 0.0, 1.0], [0.0, 2.0, 1.0]])
    history = torch.zeros((2, 1), dtype=torch.long)
    tiny = Sampling(8, 0, 1e-30, 1.0, 1.0)
    greedy = Sampling(8, 0, 0.0, 1.0, 1.0)
    assert next_tokens(logits, history, [tiny, greedy], [0, 0], 0).tolist() == [NO_TOKEN, 1]


def test_finite_logits_whose_sum_overflows_are_not_taken_for_broken():
    # Rows are screened by their sum: a sum that overflows must not fail a healthy row.
    logits = torch.tensor([[3e38, 3e38, 1.0], [0.0, 2.0, math.nan]])
    history = torch.zeros((2, 1), dtype=torch.long)
    greedy = Sampling(8, 0, 0.0, 1.0, 1.0)
    assert next_tokens(logits, history, [greedy, greedy], [0, 0], 0).tolist() == [0, NO_TOKEN]

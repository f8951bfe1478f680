"""Newcomers' cache rows join the running rows' cache right-aligned, left padding zeroed."""

from __future__ import annotations

import torch

from bot.engine.kv_batch import _GrowingLayer


def _layer_with(states: torch.Tensor) -> _GrowingLayer:
    layer = _GrowingLayer()
    layer.update(states, states.clone())
    return layer


def test_added_rows_are_right_aligned_with_zeros_on_the_left_and_decoding_goes_on():
    layer = _layer_with(torch.full((2, 1, 3, 2), 1.0))  # 2 running rows, 3 columns
    newcomer = torch.full((1, 1, 5, 2), 2.0)  # 1 newcomer, 5 columns
    layer.add_rows(newcomer, newcomer.clone(), 5)
    assert layer.keys.shape == (3, 1, 5, 2) and layer.length == 5
    assert torch.equal(layer.keys[:2, :, :2], torch.zeros(2, 1, 2, 2))
    assert torch.equal(layer.keys[:2, :, 2:], torch.full((2, 1, 3, 2), 1.0))
    assert torch.equal(layer.values[2], torch.full((1, 5, 2), 2.0))
    step = torch.full((3, 1, 1, 2), 3.0)  # the next decode step writes one column
    keys, _ = layer.update(step, step.clone())
    assert keys.shape == (3, 1, 6, 2) and torch.equal(keys[:, :, 5], step[:, :, 0])
    assert torch.equal(keys[:, :, :5], torch.cat([torch.nn.functional.pad(
        torch.full((2, 1, 3, 2), 1.0), (0, 0, 2, 0)), newcomer]))


def test_a_shorter_newcomer_is_padded_to_the_running_length():
    layer = _layer_with(torch.full((1, 2, 4, 3), 1.0))
    newcomer = torch.full((2, 2, 1, 3), 5.0)
    layer.add_rows(newcomer, newcomer.clone(), 4)
    assert torch.equal(layer.values[1:, :, :3], torch.zeros(2, 2, 3, 3))
    assert torch.equal(layer.values[1:, :, 3], torch.full((2, 2, 3), 5.0))
    assert torch.equal(layer.keys[0], torch.full((2, 4, 3), 1.0))

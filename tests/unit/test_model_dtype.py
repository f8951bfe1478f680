"""MODEL_DTYPE: auto on a CPU picks bf16 only when measured faster; TORCH_THREADS is applied."""

from __future__ import annotations

import logging

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from bot.core.config import SettingsError, load_settings
from bot.core.generation import GenerationConfig
from bot.engine import model_dtype
from bot.engine.serving_model import apply_threads, load_serving_model


def test_explicit_types_are_taken_as_given():
    assert model_dtype.resolve_dtype("float32", "cpu") is torch.float32
    assert model_dtype.resolve_dtype("bfloat16", "cpu") is torch.bfloat16
    assert model_dtype.resolve_dtype("float16", "cuda") is torch.float16
    # int8 and a CPU's auto load float32 first: quantizing or measuring comes after
    assert model_dtype.resolve_dtype("int8", "cpu") is torch.float32
    assert model_dtype.resolve_dtype("auto", "cpu") is torch.float32
    assert model_dtype.resolve_dtype("auto", "mps") is torch.float32


def _model(n_embd: int = 32) -> GPT2LMHeadModel:
    return GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=n_embd, n_head=2, vocab_size=300))


def _fake_timing(monkeypatch, ms: dict[str, float]) -> list[str]:
    """time_linears reports `ms` per dtype; returns the order the dtypes were timed in."""
    order = []

    def timed(products):
        name = str(products[0][1].dtype).removeprefix("torch.")
        order.append(name)
        return ms[name] / 1000

    monkeypatch.setattr(model_dtype, "time_linears", timed)
    monkeypatch.setattr(model_dtype, "_chosen", {})
    return order


@pytest.mark.parametrize(("ms", "expected"), [
    ({"float32": 10.0, "bfloat16": 22.0}, "float32"),   # the Intel Xeon's case
    ({"float32": 10.0, "bfloat16": 9.5}, "float32"),    # within the noise margin
    ({"float32": 10.0, "bfloat16": 6.0}, "bfloat16"),   # the AMD EPYC's case
])
def test_auto_picks_bf16_only_when_measured_faster(monkeypatch, caplog, ms, expected):
    order = _fake_timing(monkeypatch, ms)
    with caplog.at_level(logging.INFO, logger=model_dtype.__name__):
        chosen, figures = model_dtype.choose_cpu_dtype(_model(), rows=16)
    assert chosen == expected
    assert figures == pytest.approx(ms)
    # both timed alternately, each going first half the time
    assert order.count("float32") == order.count("bfloat16") == model_dtype.PROBE_REPEATS
    assert order[0:2] == ["float32", "bfloat16"] and order[2:4] == ["bfloat16", "float32"]
    assert f"MODEL_DTYPE=auto on this CPU: {expected}" in caplog.text
    assert f"float32 {ms['float32']:.1f} ms, bfloat16 {ms['bfloat16']:.1f} ms" in caplog.text


def test_the_choice_is_measured_once_per_shape(monkeypatch):
    order = _fake_timing(monkeypatch, {"float32": 10.0, "bfloat16": 20.0})
    model_dtype.choose_cpu_dtype(_model(), rows=16)
    model_dtype.choose_cpu_dtype(_model(), rows=16)
    assert len(order) == 2 * model_dtype.PROBE_REPEATS
    model_dtype.choose_cpu_dtype(_model(n_embd=64), rows=16)
    assert len(order) == 4 * model_dtype.PROBE_REPEATS


def test_the_probe_times_the_models_own_shapes():
    shapes = model_dtype.linear_shapes(_model())
    # per block: c_attn 32->96, attn c_proj 32->32, c_fc 32->128, mlp c_proj 128->32; LM head
    assert shapes == {(32, 96): 2, (32, 32): 2, (32, 128): 2, (128, 32): 2, (32, 300): 1}
    products = model_dtype.operands(shapes, torch.bfloat16, rows=4)
    assert {(x.shape, w.shape, x.dtype) for x, w, _ in products} == {
        (torch.Size([4, i]), torch.Size([o, i]), torch.bfloat16) for i, o in shapes}
    assert model_dtype.time_linears(products) > 0


@pytest.mark.parametrize(("ms", "expected"), [
    ({"float32": 10.0, "bfloat16": 30.0}, torch.float32),
    ({"float32": 10.0, "bfloat16": 5.0}, torch.bfloat16)])
def test_an_auto_engine_model_is_loaded_in_the_chosen_type(monkeypatch, tiny_model_dir, ms,
                                                           expected):
    _fake_timing(monkeypatch, ms)
    config = GenerationConfig(model_name=str(tiny_model_dir), device="cpu", dtype="auto")
    model, _ = load_serving_model(config)
    assert {p.dtype for p in model.parameters()} == {expected}


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_torch_threads_is_honoured(restore_threads, tiny_model_dir):
    wanted = 3 if torch.get_num_threads() != 3 else 2
    config = GenerationConfig(model_name=str(tiny_model_dir), device="cpu", dtype="float32",
                              torch_threads=wanted)
    load_serving_model(config)
    assert torch.get_num_threads() == wanted
    apply_threads(None)  # unset: left as it is
    assert torch.get_num_threads() == wanted


def test_torch_threads_setting_is_read_and_checked():
    assert load_settings(torch_threads="2", _env_file=None).torch_threads == 2
    assert load_settings(torch_threads="", _env_file=None).torch_threads is None
    with pytest.raises(SettingsError, match="TORCH_THREADS"):
        load_settings(torch_threads="0", _env_file=None)


def test_an_unknown_type_is_refused():
    with pytest.raises(SettingsError, match="MODEL_DTYPE"):
        load_settings(model_dtype="int4", _env_file=None)

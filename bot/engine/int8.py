"""MODEL_DTYPE=int8: the frozen base model's big matrices in int8 on a CPU, LoRA kept in float32.

A CPU decode step of GPT-2 spends most of its time in the block linears (56 %) and the
vocabulary projection (21 %). PyTorch's dynamic quantization (`torch.ao`, x86/fbgemm kernels)
stores those weights in int8, one scale per output channel, and quantizes each call's input on
the fly; it ran the GPT-2-small block linears 3-4x and the LM head 6x faster than float32 at 16
rows here (bench/quantize.py measures the whole step and the quality).

GPT-2's `Conv1D` layers become `Int8Linear`, a subclass of `nn.Linear`, so peft wraps them as
it wraps any linear layer: each row's LoRA update (`adapter_names`) is computed in float32 from
the float input and added to the int8 base's output, so mixed-adapter batches and hot swaps work
as on the float32 path. Embeddings, layer norms and attention stay float32.

One caveat: the input of a quantized linear is scaled per call, so a row's activations share
a scale with the other rows of its step; a row's tokens can then depend very slightly on its
neighbours (the float32 path keeps rows independent).
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

# GPT-2's names of the linears inside each block.
BLOCK_LINEARS = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")


class Int8Linear(nn.Linear):
    """A frozen linear layer with int8 weights (per output channel) and float input/output."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        """`weight` [out, in] and `bias` [out] in float, as `nn.Linear` holds them."""
        nn.Module.__init__(self)
        self.out_features, self.in_features = weight.shape
        source = nn.Linear(self.in_features, self.out_features, bias=bias is not None)
        with torch.no_grad():
            source.weight.copy_(weight)
            if bias is not None:
                source.bias.copy_(bias)
        source.qconfig = torch.ao.quantization.per_channel_dynamic_qconfig
        with warnings.catch_warnings():
            # torch.ao quantization is deprecated in favour of torchao, whose CPU int8 path
            # is not faster here yet; the kernels used are fbgemm/onednn's, still shipped.
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", UserWarning)
            quantized = torch.ao.nn.quantized.dynamic.Linear.from_float(source)
        # Kept out of the module tree: peft loads adapters with `load_state_dict(strict=False)`,
        # which a quantized module refuses when its own keys are missing. The weights are frozen
        # and never saved, so nothing needs to reach them through the tree.
        self.__dict__["quantized"] = quantized
        # peft places a LoRA layer's weights on its base layer's weight's device and dtype:
        # an empty float32 tensor says "cpu, float32" without keeping a float copy.
        self.weight = nn.Parameter(torch.empty(0), requires_grad=False)
        self.register_parameter("bias", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.quantized(x.float())

    def extra_repr(self) -> str:
        return f"{self.quantized}"


def _from_conv1d(module) -> Int8Linear:
    # Conv1D computes x @ W + b with W [in, out]; nn.Linear holds W transposed.
    return Int8Linear(module.weight.detach().t().float(), module.bias.detach().float())


def quantize_base(model) -> None:
    """Replace `model`'s block linears and its LM head by Int8Linear (a GPT-2 model, float32,
    not yet wrapped by peft). The input embedding stays float32: the LM head gets an int8 copy
    of the tied matrix."""
    from transformers.pytorch_utils import Conv1D

    blocks = model.transformer.h
    for block in blocks:
        for path in BLOCK_LINEARS:
            parent_path, _, name = path.rpartition(".")
            parent = block.get_submodule(parent_path)
            module = getattr(parent, name)
            if not isinstance(module, Conv1D):
                raise TypeError(f"{path} is a {type(module).__name__}, expected GPT-2's Conv1D")
            setattr(parent, name, _from_conv1d(module))
    head = model.get_output_embeddings()
    quantized_head = Int8Linear(head.weight.detach().float(),
                                None if head.bias is None else head.bias.detach().float())
    model.set_output_embeddings(quantized_head)
    # Tying would point the head back at the float embedding matrix: it is int8 on its own now.
    model.config.tie_word_embeddings = False

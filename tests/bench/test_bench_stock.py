"""The stock check catches what a method could leave behind, and ignores what changes nothing."""

import pytest
import torch
from diffusers.hooks import HookRegistry

from ilf.bench.errors import BenchError
from ilf.bench.stock import check_stock, fingerprint


def test_leftovers_are_errors_naming_the_method(pixart6):
    model = pixart6.pipe.transformer
    before = fingerprint(pixart6.pipe)
    handle = model.transformer_blocks[2].register_forward_pre_hook(lambda m, a: None)
    with pytest.raises(BenchError, match="'leaky:20'.*transformer_blocks.2: torch_hooks"):
        check_stock(pixart6.pipe, before, "leaky:20")
    handle.remove()
    model.transformer_blocks[0].extra_state = 1
    with pytest.raises(BenchError, match="transformer_blocks.0: attrs"):
        check_stock(pixart6.pipe, before, "leaky:20")
    del model.transformer_blocks[0].extra_state
    saved = model.proj_out.bias.detach().clone()
    with torch.no_grad():
        model.proj_out.bias[0] += 1.0
    with pytest.raises(BenchError, match="weights changed"):
        check_stock(pixart6.pipe, before, "leaky:20")
    with torch.no_grad():
        model.proj_out.bias.copy_(saved)
    check_stock(pixart6.pipe, before, "clean")


def test_an_empty_hook_registry_and_its_bound_forward_are_cleaned(pixart6):
    before = fingerprint(pixart6.pipe)
    block = pixart6.pipe.transformer.transformer_blocks[1]
    HookRegistry.check_if_exists_or_initialize(block)
    block.forward = block.forward  # what HookRegistry.remove_hook leaves: the class forward, bound
    check_stock(pixart6.pipe, before, "clean")
    assert "_diffusers_hook" not in block.__dict__ and "forward" not in block.__dict__
    block.forward = lambda *a, **k: None  # anything else is a patch
    with pytest.raises(BenchError, match="forward_patched"):
        check_stock(pixart6.pipe, before, "patcher")
    del block.forward

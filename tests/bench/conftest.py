"""Shared tiny pipelines for the harness tests (session-scoped: every test must leave them stock)."""

import json

import pytest
import torch

from ilf.eval.prompts import make_items
from ilf.eval.sources import default_conditions, load_tiny_source
from ilf.feedback import CONFIG_NAME, FORMAT, FORMAT_VERSION


@pytest.fixture(scope="session")
def pixart6():
    """A 6-block tiny PixArt-α pipeline (random weights, CFG batched as [uncond, cond])."""
    return load_tiny_source("pixart", num_layers=6)


@pytest.fixture(scope="session")
def dit6():
    return load_tiny_source("dit", num_layers=6)


@pytest.fixture(scope="session")
def pixart_items(pixart6):
    return make_items(default_conditions(pixart6, 2), num_images=2)


@pytest.fixture(scope="session")
def pixart_reference(pixart6, pixart_items):
    """20 plain steps of the stock pipeline: [2, 3, H, W]."""
    return pixart6(pixart_items, 20)


def write_feedback_config(folder, loop):
    """A feedback folder's ilf_config.json alone: enough for block-count predictions (no tensors read)."""
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "loop": list(loop), "config": {"loop": list(loop)}}
    (folder / CONFIG_NAME).write_text(json.dumps(meta))
    return folder


@pytest.fixture
def no_grad():
    with torch.no_grad():
        yield

"""The paper cache keeps one residual per block and per branch: Flux true CFG makes two calls per step (cond,
then uncond), and on a cached step each must reuse the residual of its own branch. On main one residual per
block served both, so the cond call of a cached step added the uncond call's residual."""

import torch

from ilf import CacheConfig, apply_cache
from ilf.adapters import get_adapter
from tiny_runs import make_pipe, run


def test_true_cfg_branches_each_reuse_their_own_residual():
    pipe = make_pipe("flux-true-cfg")
    model = pipe.transformer
    apply_cache(pipe, CacheConfig("first", 2, 2))  # blocks 0, 1 cached; steps 0, 2 refresh, 1, 3 reuse
    site = get_adapter(model).sites(model)[1]
    deltas = []  # per call of block 1: the image stream's output minus its input

    def record(module, args, kwargs, out):
        x = kwargs.get("hidden_states", args[0] if args else None)
        deltas.append(site.stack.as_streams(out)["hidden_states"] - x)

    handle = site.module.register_forward_hook(record, with_kwargs=True)
    try:
        run(pipe, 4)
    finally:
        handle.remove()
    assert len(deltas) == 8  # 4 steps × (cond, uncond)
    refresh_cond, refresh_uncond, cached_cond, cached_uncond = deltas[:4]
    assert (refresh_cond - refresh_uncond).abs().max() > 1e-4  # the branches really differ
    torch.testing.assert_close(cached_cond, refresh_cond, rtol=0, atol=1e-6)
    torch.testing.assert_close(cached_uncond, refresh_uncond, rtol=0, atol=1e-6)

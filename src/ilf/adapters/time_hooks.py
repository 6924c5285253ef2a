"""How t_post reaches the blocks after the feedback and the output layer: hooks on the model's own time
embedding, shared by the families that embed time the same way.

* adaLN-single (PixArt `adaln_single`, Sana `time_embed`): one module returns the per-block modulation
  ([B, 6·D], the blocks' `timestep` argument) and the embedded timestep the output layer uses ([B, D]).
  The hook also computes both at t_post: the blocks after the feedback get the t_post modulation, and the
  model's output layer receives the t_post embedding in place of t's.
* temb (SD3 and Flux `time_text_embed`): one module returns `temb` ([B, D]), which every block and the
  output norm (`norm_out`, an `AdaLayerNormContinuous`) take. The hook keeps t's temb for the model (the
  blocks up to the feedback) and computes t_post's for the blocks after it; a second hook hands the t_post
  temb to `norm_out`.

`ILFRuntime.active.t_post` (the armed `FeedbackLoop`'s) is in the units of the model's `timestep` argument; `adapter.embed_scale` is the factor the
model applies before embedding it (Flux is called with t/1000 and multiplies by 1000).
"""

from __future__ import annotations

import torch
from diffusers.hooks import ModelHook

from ..errors import ILFError
from ..hooks import ILF_TIME_HOOK, ArgBinder, register


def as_float_timestep(t_post: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """t_post broadcast to the batch shape of the model's own timestep argument."""
    like = torch.as_tensor(like)
    t_post = torch.as_tensor(t_post).to(device=like.device)
    if like.ndim and t_post.numel() == 1:
        return t_post.reshape(()).expand(like.shape).float()
    return t_post.float()


def post_time(runtime, loop, like):
    """t_post in the units of the time embedding, broadcast over the batch of `like` (its timestep input)."""
    return as_float_timestep(torch.as_tensor(loop.t_post) * runtime.adapter.embed_scale, like)


class AdaLNSingleTimeHook(ModelHook):
    def __init__(self, runtime, binder: ArgBinder, block_arg: str = "timestep"):
        super().__init__()
        self.runtime, self.binder, self.block_arg = runtime, binder, block_arg

    def new_forward(self, module, *args, **kwargs):
        cond, embedded = self.fn_ref.original_forward(*args, **kwargs)  # [B, 6D], [B, D] at t
        loop = self.runtime.active  # armed only during a feedback call
        if loop is None:
            return cond, embedded
        t_post = post_time(self.runtime, loop, self.binder.get(args, kwargs, "timestep"))
        post_args, post_kwargs = self.binder.replace(args, kwargs, "timestep", t_post)
        cond_post, embedded_post = self.fn_ref.original_forward(*post_args, **post_kwargs)
        loop.set_post_block_kwargs({self.block_arg: cond_post})
        return cond, embedded_post


class TembTimeHook(ModelHook):
    """`like_dtype`: hand t_post over in the dtype of the call's own timestep (HunyuanVideo 1.5 runs its time
    embedding's linears in the timestep's dtype: a float32 t_post in a bf16 run would not fit them)."""

    def __init__(self, runtime, binder: ArgBinder, like_dtype: bool = False):
        super().__init__()
        self.runtime, self.binder, self.like_dtype = runtime, binder, like_dtype

    def new_forward(self, module, *args, **kwargs):
        temb = self.fn_ref.original_forward(*args, **kwargs)  # [B, D] at t
        loop = self.runtime.active  # armed only during a feedback call
        if loop is None:
            return temb
        t = self.binder.get(args, kwargs, "timestep")
        t_post = post_time(self.runtime, loop, t)
        if self.like_dtype and torch.is_tensor(t) and t.is_floating_point():
            t_post = t_post.to(t.dtype)
        post_args, post_kwargs = self.binder.replace(args, kwargs, "timestep", t_post)
        loop.set_post_block_kwargs({"temb": self.fn_ref.original_forward(*post_args, **post_kwargs)})
        return temb


class OutputNormTimeHook(ModelHook):
    """On `norm_out` (`AdaLayerNormContinuous(x, conditioning_embedding)`): t_post's temb in place of t's."""

    def __init__(self, runtime, binder: ArgBinder):
        super().__init__()
        self.runtime, self.binder = runtime, binder

    def pre_forward(self, module, *args, **kwargs):
        loop = self.runtime.active  # armed only during a feedback call
        if loop is None or "temb" not in loop.post_block_kwargs:
            return args, kwargs
        name = self.binder.names[1]  # the conditioning argument, second in the signature
        return self.binder.replace(args, kwargs, name, loop.post_block_kwargs["temb"])


def install_temb_hooks(model, runtime) -> list:
    """The two hooks of the temb families (SD3, Flux); returns their `HookHandle`s."""
    embed, norm = model.time_text_embed, model.norm_out
    return [
        register(embed, TembTimeHook(runtime, ArgBinder(type(embed).forward, first="timestep")), ILF_TIME_HOOK),
        register(norm, OutputNormTimeHook(runtime, ArgBinder(type(norm).forward)), ILF_TIME_HOOK),
    ]


class NoTPostReembedding:
    """Adapter methods for a family whose time conditioning ilf cannot re-embed at t_post (FLUX.2, Z-Image):
    ILF's t_post is refused with `t_post_refusal` (a sentence naming the family and what to use instead), at
    attach and on a feedback call given any t_post but the call's own timestep; `t_post="none"` and the
    corrector need no time hook."""

    t_post_refusal: str

    def install_time_hooks(self, model, runtime):
        if runtime.config.t_post != "none":
            raise ILFError(self.t_post_refusal)
        return []  # t_post = t: the blocks after the feedback keep the call's own conditioning

    def post_block_kwargs(self, model, loop):
        # t_post = t is the call's own timestep object (a scheduled call with t_post="none", or `ilf_t_post=`
        # given that very tensor): an identity check, no device read
        if loop.t_post is not loop.inputs.get("timestep"):
            raise ILFError(self.t_post_refusal)
        return {}

import pytest
import torch

from adapter_mixin import ILFAdapterTests
from ilf import ILFConfig, apply_ilf
from ilf.tiny_mmdit import tiny_flux


def flux_reference(model, feedback, loop, inputs, t_post):
    """Flux forward written out (dual then single blocks, one global index), with the loop of eq. 2–3 on
    the image stream and the text stream threaded through the loop re-run."""
    b, e = loop
    blocks = list(model.transformer_blocks) + list(model.single_transformer_blocks)
    pooled, guidance = inputs["pooled_projections"], inputs.get("guidance")

    def temb_at(t):  # the model embeds timestep × 1000 (and guidance × 1000)
        if guidance is None:
            return model.time_text_embed(t * 1000, pooled)
        return model.time_text_embed(t * 1000, guidance * 1000, pooled)

    with torch.no_grad():
        h = model.x_embedder(inputs["hidden_states"])  # [B, L, D]
        temb, temb_p = temb_at(inputs["timestep"]), temb_at(t_post)
        enc = model.context_embedder(inputs["encoder_hidden_states"])  # [B, T, D]
        rope = model.pos_embed(torch.cat([inputs["txt_ids"], inputs["img_ids"]]))

        def run(i, h, enc, temb):
            enc, h = blocks[i](hidden_states=h, encoder_hidden_states=enc, temb=temb, image_rotary_emb=rope)
            return h, enc

        for i in range(e + 1):
            if i == b:
                h_in, enc_in = h, enc
            h, enc = run(i, h, enc, temb)
        f_feed = feedback.block(hidden_states=h, encoder_hidden_states=enc, temb=temb, image_rotary_emb=rope)[1]
        h, enc = h_in, enc_in
        for j, i in enumerate(range(b, e + 1)):
            h, enc = run(i, h + feedback.scales[j] * f_feed, enc, temb_p)
        for i in range(e + 1, len(blocks)):
            h, enc = run(i, h, enc, temb_p)
        return model.proj_out(model.norm_out(h, temb_p))  # [B, L, C]


class TestFluxAdapter(ILFAdapterTests):
    num_layers = 6  # 3 dual-stream + 3 single-stream blocks: the default loop (2, 4) crosses the boundary
    t_units = 1 / 1000  # FluxPipeline calls the model with t / 1000
    guidance = False

    def make_model(self, num_layers=None, seed=0):
        n = num_layers or self.num_layers
        return tiny_flux(num_layers=n // 2, num_single_layers=n - n // 2, seed=seed, guidance_embeds=self.guidance)

    def make_inputs(self, model, batch=1, cfg=False, t=600):
        g = torch.Generator().manual_seed(3)
        c = model.config
        x = torch.randn(batch, 16, c.in_channels, generator=g)  # 4×4 packed tokens
        text = torch.randn(batch, 5, c.joint_attention_dim, generator=g)
        pooled = torch.randn(batch, c.pooled_projection_dim, generator=g)
        if cfg:  # a batched CFG call: [uncond, cond] (FluxPipeline's true CFG makes two calls instead)
            x = torch.cat([x, x])
            text = torch.cat([torch.randn(batch, 5, c.joint_attention_dim, generator=g), text])
            pooled = torch.cat([torch.randn(batch, c.pooled_projection_dim, generator=g), pooled])
        img_ids = torch.stack(torch.meshgrid(torch.zeros(1), torch.arange(4.0), torch.arange(4.0), indexing="ij"),
                              -1).reshape(-1, 3)
        kw = dict(hidden_states=x, encoder_hidden_states=text, pooled_projections=pooled,
                  timestep=torch.full((x.shape[0],), self.T(float(t))), img_ids=img_ids, txt_ids=torch.zeros(5, 3))
        if self.guidance:
            kw["guidance"] = torch.full((x.shape[0],), 3.5)
        return kw

    def reference(self, model, feedback, loop, inputs, t_post):
        return flux_reference(model, feedback, loop, inputs, t_post)

    @pytest.mark.parametrize("loop,cls", [((0, 1), "FluxTransformerBlock"), ((2, 4), "FluxSingleTransformerBlock")])
    def test_feedback_is_a_block_of_the_class_of_the_loops_last_block(self, loop, cls):
        rt = apply_ilf(self.make_model(), ILFConfig(loop=loop))
        assert type(rt.feedback.block).__name__ == cls


class TestFluxDevAdapter(TestFluxAdapter):
    """FLUX.1-dev: guidance-distilled; the guidance embedding is kept, only the timestep moves to t_post."""

    guidance = True


def test_copying_a_block_of_the_other_class_is_refused_with_the_blocks_that_fit():
    from ilf import LoopRangeError

    model = tiny_flux(num_layers=3, num_single_layers=3)
    with pytest.raises(LoopRangeError, match=r"init_block=0 is a FluxTransformerBlock.*copy one of blocks \[3, 4, 5\]"):
        apply_ilf(model, ILFConfig(loop=(3, 4), init_block=0))

import torch

from adapter_mixin import ILFAdapterTests
from ilf.tiny_mmdit import tiny_sd3


def sd3_reference(model, feedback, loop, inputs, t_post, feed_text=False):
    """SD3 forward written out, with the loop of eq. 2–3 on the image stream; the text stream threads
    through the loop re-run as through the model, and the context_pre_only last block returns none."""
    b, e = loop
    blocks = list(model.transformer_blocks)
    x, t, pooled = inputs["hidden_states"], inputs["timestep"], inputs["pooled_projections"]
    p, (H, W) = model.config.patch_size, x.shape[-2:]
    with torch.no_grad():
        h = model.pos_embed(x)  # [B, L, D]
        temb, temb_p = model.time_text_embed(t, pooled), model.time_text_embed(t_post, pooled)  # [B, D]
        enc = model.context_embedder(inputs["encoder_hidden_states"])  # [B, T, D]

        def run(i, h, enc, temb):
            enc_out, h = blocks[i](hidden_states=h, encoder_hidden_states=enc, temb=temb)
            return h, (enc if enc_out is None else enc_out)

        for i in range(e + 1):
            if i == b:
                h_in, enc_in = h, enc
            enc_given = enc
            h, enc = run(i, h, enc, temb)
        t_feed, f_feed = feedback.block(hidden_states=h, encoder_hidden_states=enc if e < len(blocks) - 1 else enc_given,
                                        temb=temb)
        h, enc = h_in, enc_in
        for j, i in enumerate(range(b, e + 1)):
            if feed_text:
                enc = enc + feedback.scales[j] * t_feed
            h, enc = run(i, h + feedback.scales[j] * f_feed, enc, temb_p)
        for i in range(e + 1, len(blocks)):
            h, enc = run(i, h, enc, temb_p)
        h = model.proj_out(model.norm_out(h, temb_p))  # [B, L, p*p*C]
        n, c = h.shape[0], model.out_channels
        h = h.reshape(n, H // p, W // p, p, p, c)
        return torch.einsum("nhwpqc->nchpwq", h).reshape(n, c, H, W)


class TestSD3Adapter(ILFAdapterTests):
    def make_model(self, num_layers=None, seed=0):
        return tiny_sd3(num_layers=num_layers or self.num_layers, seed=seed)

    def make_inputs(self, model, batch=1, cfg=False, t=600):
        g = torch.Generator().manual_seed(3)
        c = model.config
        x = torch.randn(batch, c.in_channels, 8, 8, generator=g)
        text = torch.randn(batch, 5, c.joint_attention_dim, generator=g)
        pooled = torch.randn(batch, c.pooled_projection_dim, generator=g)
        if cfg:  # StableDiffusion3Pipeline: [uncond, cond] concatenated
            x = torch.cat([x, x])
            text = torch.cat([torch.randn(batch, 5, c.joint_attention_dim, generator=g), text])
            pooled = torch.cat([torch.randn(batch, c.pooled_projection_dim, generator=g), pooled])
        return dict(hidden_states=x, encoder_hidden_states=text, pooled_projections=pooled,
                    timestep=torch.full((x.shape[0],), float(t)))

    def reference(self, model, feedback, loop, inputs, t_post):
        return sd3_reference(model, feedback, loop, inputs, t_post)

    def test_the_last_block_is_context_pre_only_and_a_loop_may_end_there(self):
        model = self.make_model()
        assert model.transformer_blocks[-1].context_pre_only and not model.transformer_blocks[-2].context_pre_only
        from ilf import ILFConfig, apply_ilf

        rt = apply_ilf(model, ILFConfig(loop=(self.num_layers - 2, self.num_layers - 1), init="fresh"))
        assert rt.feedback.block.context_pre_only  # F is built like the loop's last block


def test_feed_text_adds_the_feedbacks_text_stream_too_and_is_refused_where_there_is_none():
    import pytest

    from ilf import ILFConfig, ILFError, apply_ilf, remove_ilf
    from ilf.tiny import tiny_pixart

    t = TestSD3Adapter()
    model = t.make_model()
    inputs = t.make_inputs(model, batch=2)
    rt = apply_ilf(model, ILFConfig(loop=(1, 3), init="fresh", feed_text=True))
    rt.feedback.scales.data.copy_(torch.tensor([0.5, -0.3, 0.4]))
    t_post = torch.full_like(inputs["timestep"], 350.0)
    with torch.no_grad():
        out = model(**inputs, ilf_t_post=t_post).sample
    torch.testing.assert_close(out, sd3_reference(model, rt.feedback, (1, 3), inputs, t_post, feed_text=True),
                               rtol=1e-5, atol=1e-5)
    image_only = sd3_reference(model, rt.feedback, (1, 3), inputs, t_post)
    assert not torch.allclose(out, image_only, atol=1e-4)  # the text stream's feedback reaches the image
    remove_ilf(model)
    with pytest.raises(ILFError, match="context_pre_only"):
        apply_ilf(model, ILFConfig(loop=(3, 5), feed_text=True))
    with pytest.raises(ILFError, match="no text stream"):
        apply_ilf(tiny_pixart(), ILFConfig(loop=(1, 3), feed_text=True))

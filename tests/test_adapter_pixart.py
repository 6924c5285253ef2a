import torch

from adapter_mixin import ILFAdapterTests, single_stream_loop
from ilf.tiny import tiny_pixart


class TestPixArtAdapter(ILFAdapterTests):
    def make_model(self, num_layers=None, seed=0):
        return tiny_pixart(num_layers=num_layers or self.num_layers, seed=seed)

    def make_inputs(self, model, batch=1, cfg=False, t=600):
        g = torch.Generator().manual_seed(3)
        x = torch.randn(batch, 4, 8, 8, generator=g)
        text = torch.randn(batch, 5, model.config.caption_channels, generator=g)
        mask = torch.ones(batch, 5)
        mask[:, 3:] = 0  # padded caption tokens
        if cfg:  # PixArt pipelines: [uncond, cond] concatenated
            x = torch.cat([x, x])
            text = torch.cat([torch.randn(batch, 5, model.config.caption_channels, generator=g), text])
            mask = torch.cat([torch.ones(batch, 5), mask])
        return dict(
            hidden_states=x, encoder_hidden_states=text, encoder_attention_mask=mask,
            timestep=torch.full((x.shape[0],), t, dtype=torch.long),
            added_cond_kwargs={"resolution": None, "aspect_ratio": None},
        )

    def reference(self, model, feedback, loop, inputs, t_post):
        """PixArt forward written out, with the loop of eq. 2–3 (input of B_i = h_{i-1} + s_i f_feed)."""
        blocks = model.transformer_blocks
        x, t = inputs["hidden_states"], inputs["timestep"]
        n, p = x.shape[0], model.config.patch_size
        with torch.no_grad():
            bias = ((1 - inputs["encoder_attention_mask"]) * -10000.0).unsqueeze(1)  # [B, 1, T]
            h = model.pos_embed(x)
            cond_t, _ = model.adaln_single(t, inputs["added_cond_kwargs"], batch_size=n, hidden_dtype=h.dtype)
            cond_p, emb_p = model.adaln_single(t_post, inputs["added_cond_kwargs"], batch_size=n, hidden_dtype=h.dtype)
            text = model.caption_projection(inputs["encoder_hidden_states"]).view(n, -1, h.shape[-1])
            kw = dict(encoder_hidden_states=text, encoder_attention_mask=bias)
            h = single_stream_loop(blocks, feedback, h, loop, cond_t, cond_p, **kw)
            shift, scale = (model.scale_shift_table[None] + emb_p[:, None]).chunk(2, dim=1)
            h = model.proj_out(model.norm_out(h) * (1 + scale) + shift)
            hw = int(h.shape[1] ** 0.5)
            h = h.reshape(n, hw, hw, p, p, model.out_channels)
            return torch.einsum("nhwpqc->nchpwq", h).reshape(n, model.out_channels, hw * p, hw * p)

import torch

from adapter_mixin import ILFAdapterTests, single_stream_loop
from ilf.tiny_mmdit import tiny_sana


class TestSanaAdapter(ILFAdapterTests):
    def make_model(self, num_layers=None, seed=0):
        return tiny_sana(num_layers=num_layers or self.num_layers, seed=seed)

    def make_inputs(self, model, batch=1, cfg=False, t=600):
        g = torch.Generator().manual_seed(3)
        c = model.config
        x = torch.randn(batch, c.in_channels, 8, 8, generator=g)
        text = torch.randn(batch, 5, c.caption_channels, generator=g)
        mask = torch.ones(batch, 5)
        mask[:, 3:] = 0  # padded caption tokens
        if cfg:  # SanaPipeline: [uncond, cond] concatenated
            x = torch.cat([x, x])
            text = torch.cat([torch.randn(batch, 5, c.caption_channels, generator=g), text])
            mask = torch.cat([torch.ones(batch, 5), mask])
        return dict(hidden_states=x, encoder_hidden_states=text, encoder_attention_mask=mask,
                    timestep=torch.full((x.shape[0],), float(t)))

    def reference(self, model, feedback, loop, inputs, t_post):
        """Sana forward written out, with the loop of eq. 2–3 (input of B_i = h_{i-1} + s_i f_feed)."""
        blocks = model.transformer_blocks
        x, t = inputs["hidden_states"], inputs["timestep"]
        n, _, H, W = x.shape
        p = model.config.patch_size
        hp, wp = H // p, W // p
        with torch.no_grad():
            bias = ((1 - inputs["encoder_attention_mask"]) * -10000.0).unsqueeze(1)  # [B, 1, T]
            h = model.patch_embed(x)
            cond_t, _ = model.time_embed(t, batch_size=n, hidden_dtype=h.dtype)
            cond_p, emb_p = model.time_embed(t_post, batch_size=n, hidden_dtype=h.dtype)
            text = model.caption_norm(model.caption_projection(inputs["encoder_hidden_states"]).view(n, -1, h.shape[-1]))
            kw = dict(encoder_hidden_states=text, encoder_attention_mask=bias, height=hp, width=wp)
            h = single_stream_loop(blocks, feedback, h, loop, cond_t, cond_p, **kw)
            h = model.proj_out(model.norm_out(h, emb_p, model.scale_shift_table))
            h = h.reshape(n, hp, wp, p, p, -1).permute(0, 5, 1, 3, 2, 4)
            return h.reshape(n, -1, hp * p, wp * p)

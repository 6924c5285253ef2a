import torch
import torch.nn.functional as F

from adapter_mixin import ILFAdapterTests, single_stream_loop
from ilf.tiny import tiny_dit


class TestDiTAdapter(ILFAdapterTests):
    def other_family_model(self):
        from ilf.tiny import tiny_pixart

        return tiny_pixart(num_layers=self.num_layers)

    def make_model(self, num_layers=None, seed=0):
        return tiny_dit(num_layers=num_layers or self.num_layers, seed=seed)

    def make_inputs(self, model, batch=1, cfg=False, t=600):
        g = torch.Generator().manual_seed(3)
        x = torch.randn(batch, 4, 8, 8, generator=g)
        labels = torch.randint(0, 1000, (batch,), generator=g)
        if cfg:  # DiTPipeline: [x, x] with [labels, null class 1000]
            x, labels = torch.cat([x, x]), torch.cat([labels, torch.full_like(labels, 1000)])
        return dict(hidden_states=x, timestep=torch.full((x.shape[0],), t, dtype=torch.long), class_labels=labels)

    def reference(self, model, feedback, loop, inputs, t_post):
        """DiT forward written out, with the loop of eq. 2–3 (input of B_i = h_{i-1} + s_i f_feed)."""
        blocks, y, t = model.transformer_blocks, inputs["class_labels"], inputs["timestep"]
        x = inputs["hidden_states"]
        p = model.config.patch_size
        with torch.no_grad():
            h = model.pos_embed(x)  # [B, L, D]
            h = single_stream_loop(blocks, feedback, h, loop, t, t_post, class_labels=y)
            cond = blocks[0].norm1.emb(t_post, y, hidden_dtype=h.dtype)
            shift, scale = model.proj_out_1(F.silu(cond)).chunk(2, dim=1)
            h = model.norm_out(h) * (1 + scale[:, None]) + shift[:, None]
            h = model.proj_out_2(h)  # [B, L, p*p*C]
            n, hw = h.shape[0], int(h.shape[1] ** 0.5)
            h = h.reshape(n, hw, hw, p, p, model.out_channels)
            return torch.einsum("nhwpqc->nchpwq", h).reshape(n, model.out_channels, hw * p, hw * p)

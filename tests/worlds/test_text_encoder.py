"""MiniLM as the shapes world's text encoder, inside a real PixArtAlphaPipeline."""

import torch

from ilf.worlds import registry, text_encoder


def test_encode_shapes_and_masks():
    prompts = ["a small red circle above a large blue square", "two large green triangles", ""]
    states, mask = text_encoder.encode(prompts)
    assert states.shape == (3, text_encoder.MAX_LENGTH, text_encoder.WIDTH) and states.dtype == torch.float32
    assert mask.shape == (3, text_encoder.MAX_LENGTH)
    ids = text_encoder.load_tokenizer()(prompts).input_ids
    assert mask.sum(1).tolist() == [len(i) for i in ids]  # one per real token ([CLS] … [SEP]), zeros after
    assert mask[2].sum() == 2  # the empty (null) prompt is [CLS] [SEP]
    assert torch.all(mask[:, :2] == 1) and torch.all(mask[:, -1] == 0)


def test_states_depend_on_the_words_not_on_padding_length():
    a, ma = text_encoder.encode(["a large red circle in the center"], max_length=16)
    b, mb = text_encoder.encode(["a large red circle in the center"], max_length=32)
    n = int(ma.sum())
    assert torch.allclose(a[0, :n], b[0, :n], atol=1e-4)
    c, _ = text_encoder.encode(["a large blue circle in the center"], max_length=16)
    assert (a[0, :n] - c[0, :n]).abs().max() > 0.1


def test_pixart_pipeline_encodes_prompts_exactly_like_encode():
    pipe = registry.load_pipeline("shapes")
    prompts = ["three small yellow crosses", "a large white square on the left"]
    embeds, mask, neg, neg_mask = pipe.encode_prompt(prompts, do_classifier_free_guidance=True,
                                                     max_sequence_length=text_encoder.MAX_LENGTH, clean_caption=False)
    ours, our_mask = text_encoder.encode(prompts)
    null, null_mask = text_encoder.encode([""] * 2)
    assert torch.allclose(embeds, ours, atol=1e-5) and torch.equal(mask, our_mask)
    assert torch.allclose(neg, null, atol=1e-5) and torch.equal(neg_mask, null_mask)

"""CLIP score and CLIP-IQA through our wrapper, against the model's own embeddings and a hand
cosine / softmax. The CLIP model and tokenizer are tiny, random, and saved to a temp folder."""

import json

import pytest
import torch
import torch.nn.functional as F

from ilf.eval.metrics import CLIP_IQA_PROMPTS, CLIPMetrics, MissingWeightsError

WORDS = "good bad noisy clear colorful dull natural synthetic photo . a cat dog red blue car on the beach".split()
MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)  # not CLIP's defaults, so reading them is tested


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import CLIPConfig, CLIPModel, PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<unk>": 1, "<bos>": 2, "<eos>": 3, **{w: i + 4 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()  # "photo." -> "photo", "."
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", 2), ("<eos>", 3)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )
    torch.manual_seed(0)
    # initializer_factor=5 spreads the random embeddings (at 1 they share one direction), so cosines
    # of both signs occur and the clamp of the CLIP score is exercised.
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(vocab), hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=12, bos_token_id=2, eos_token_id=3, pad_token_id=0, initializer_factor=5.0,
        ),
        vision_config=dict(
            image_size=32, patch_size=8, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
            num_attention_heads=4, initializer_factor=5.0,
        ),
        projection_dim=16,
    )
    path = tmp_path_factory.mktemp("tiny_clip")
    CLIPModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    (path / "preprocessor_config.json").write_text(json.dumps({"image_mean": MEAN, "image_std": STD}))
    return path


@pytest.fixture(scope="module")
def reference(clip_dir):
    """The same checkpoint loaded directly with transformers, for hand computations."""
    from transformers import CLIPModel, PreTrainedTokenizerFast

    model = CLIPModel.from_pretrained(clip_dir).eval()
    tokenizer = PreTrainedTokenizerFast.from_pretrained(clip_dir)

    @torch.no_grad()
    def image_emb(images):  # square 32x32 images: only normalisation, no resize
        pixels = (images - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)
        out = model.get_image_features(pixel_values=pixels)
        return getattr(out, "pooler_output", out)

    @torch.no_grad()
    def text_emb(texts):
        tok = tokenizer(texts, padding=True, truncation=True, max_length=12, return_tensors="pt")
        out = model.get_text_features(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"])
        return getattr(out, "pooler_output", out)

    return image_emb, text_emb


@pytest.fixture(scope="module")
def metrics(clip_dir):
    return CLIPMetrics.from_pretrained(clip_dir, batch_size=3)  # batches smaller than the inputs


def _cos(a, b):
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))


def test_clip_score_is_100_times_clamped_cosine(metrics, reference):
    image_emb, text_emb = reference
    g = torch.Generator().manual_seed(1)
    # every image with every prompt (64 pairs), images of varied brightness and contrast
    images = (torch.rand(8, 3, 32, 32, generator=g) * torch.rand(8, 3, 1, 1, generator=g)).repeat_interleave(8, 0)
    prompts = ["a red car", "a cat", "dog on the beach", "blue car", "a dog", "the cat", "red beach", "a blue dog"] * 8
    hand_cos = _cos(image_emb(images), text_emb(prompts))  # [64]
    assert (hand_cos < 0).any() and (hand_cos > 0).any()  # both sides of the clamp are exercised
    torch.testing.assert_close(metrics.clip_score(images, prompts), 100 * hand_cos.clamp(min=0), atol=1e-4, rtol=0)


def test_clip_iqa_is_softmax_over_antonym_pair(metrics, reference):
    image_emb, text_emb = reference
    assert CLIP_IQA_PROMPTS == {
        "good": ("Good photo.", "Bad photo."),
        "noisy": ("Noisy photo.", "Clear photo."),
        "colorful": ("Colorful photo.", "Dull photo."),
        "natural": ("Natural photo.", "Synthetic photo."),
    }
    images = torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    img = image_emb(images)
    scores = metrics.clip_iqa(images)
    assert set(scores) == {"good", "noisy", "colorful", "natural"}
    all_scores = torch.cat(list(scores.values()))
    assert ((all_scores > 1) & (all_scores < 99)).any()  # not all saturated, so the softmax is really tested
    for name, (pos, neg) in CLIP_IQA_PROMPTS.items():
        t = text_emb([pos, neg])
        cp, cn = _cos(img, t[0:1]), _cos(img, t[1:2])
        p_pos = torch.exp(100 * cp) / (torch.exp(100 * cp) + torch.exp(100 * cn))
        torch.testing.assert_close(scores[name], 100 * p_pos, atol=1e-3, rtol=0)


def test_images_are_resized_and_centre_cropped_once(metrics):
    # 32 x 48: the shorter side already fits, so preprocessing is a centre crop of columns 8..39
    img = torch.rand(2, 3, 32, 48, generator=torch.Generator().manual_seed(3))
    expected = (img[..., 8:40] - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)
    torch.testing.assert_close(metrics.preprocess(img), expected)
    # a constant colour stays that colour through any resize: one normalisation, no double rescale
    const = torch.full((1, 3, 100, 70), 0.25)
    expected = (0.25 - torch.tensor(MEAN)) / torch.tensor(STD)
    torch.testing.assert_close(metrics.preprocess(const)[0].mean((1, 2)), expected, atol=1e-5, rtol=0)
    assert metrics.preprocess(const).shape == (1, 3, 32, 32)


def test_long_prompts_are_truncated_to_the_text_context(metrics, reference):
    _, text_emb = reference
    long = " ".join(["a red car on the beach"] * 6)  # 36 words > 12 positions
    torch.testing.assert_close(metrics.embed_texts([long]), F.normalize(text_emb([long]), dim=-1), atol=1e-5, rtol=0)


def test_missing_checkpoint_names_the_fix(tmp_path):
    with pytest.raises(MissingWeightsError, match="huggingface-cli download"):
        CLIPMetrics.from_pretrained(tmp_path / "no_clip_here")

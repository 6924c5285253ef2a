"""The scorer wires each metric to the right images, prompts and references: every number here is recomputed
independently (numpy/scipy Fréchet distance, the evaluator or CLIP called directly, a hand ImageReward)."""

import stat
import sys

import numpy as np
import pytest
import torch
from scipy import linalg

from ilf.errors import ILFError
from ilf.eval.metrics import FeatureStatistics, read_image, save_images
from ilf.eval.prompts import make_items
from ilf.eval.score import Scorer, WorldJudge, build_scorer


def _frechet(f1, f2):
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


@pytest.fixture
def folder(tmp_path):
    items = make_items([("p0", "a large red circle in the center"), ("p1", "two small blue squares")],
                       num_images=6, images_per_prompt=3)
    torch.manual_seed(0)
    images = torch.rand(6, 3, 32, 32)
    save_images(images, tmp_path / "gen", [it.id for it in items])
    save_images(images.flip(-1), tmp_path / "ref", [it.id for it in items])
    return tmp_path, items


def _load(path, items):
    return torch.stack([read_image(path / f"{it.id}.png") for it in items])


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")  # 6 images, 128-d features: singular
def test_world_alignment_and_frechet(folder):
    from ilf.worlds.evaluators import DigitsEvaluator, ShapesEvaluator

    root, items = folder
    torch.manual_seed(1)
    ev = ShapesEvaluator().eval()  # random weights: the wiring, not the evaluator, is under test
    real = torch.rand(40, 3, 32, 32)
    judge = WorldJudge("shapes", evaluator=ev, real_images=real)
    out = Scorer({"world"}, world=judge, batch_size=4).score(root / "gen", items)
    images = _load(root / "gen", items)
    assert out["alignment"] == pytest.approx(float(ev.score(images, [it.prompt for it in items]).mean()))
    hand = _frechet(ev.features(images).double().numpy(), ev.features(real).double().numpy())
    assert out["world_fd"] == pytest.approx(hand, rel=1e-6)
    digits = make_items([("d3", 3), ("d7", 7)], num_images=6)
    save_images(images, root / "dig", [it.id for it in digits])
    dev = DigitsEvaluator().eval()
    out = Scorer({"world"}, world=WorldJudge("digits", evaluator=dev, real_images=real)).score(root / "dig", digits)
    labels = torch.tensor([it.class_label for it in digits])
    assert out["accuracy"] == pytest.approx(float((dev.predict(images) == labels).float().mean()))


def test_fid_with_any_feature_network(folder):
    root, items = folder

    class MeanColour:  # a feature network: per-image channel means and stds, [B, 6]
        tag = "mean-colour"

        def __call__(self, x):
            x = torch.stack(list(x)) if isinstance(x, list) else x
            return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1)

    net = MeanColour()
    ref_feats = torch.rand(30, 6).double().numpy()
    ref = FeatureStatistics.from_features(ref_feats, tag="mean-colour")
    out = Scorer({"fid"}, fid_net=net, fid_ref=ref, batch_size=4, progress=False).score(root / "gen", items)
    assert out["fid"] == pytest.approx(_frechet(net(_load(root / "gen", items)).double().numpy(), ref_feats), rel=1e-6)


def test_fidelity_pairs_items_by_id(folder):
    root, items = folder
    out = Scorer({"fidelity"}).score(root / "gen", items, reference=root / "ref")
    a, b = _load(root / "gen", items).double(), _load(root / "ref", items).double()
    hand = np.mean([10 * np.log10(1 / float(((x - y) ** 2).mean())) for x, y in zip(a, b)])
    assert out["psnr"] == pytest.approx(hand, rel=1e-5)
    from ilf.eval.metrics import ssim  # itself checked against scikit-image in tests/eval; here: pairing, averaging

    assert out["ssim"] == pytest.approx(float(np.mean([float(ssim(x[None].float(), y[None].float()))
                                                       for x, y in zip(a, b)])), rel=1e-5)
    assert "psnr" not in Scorer({"fidelity"}).score(root / "gen", items)  # no reference: nothing to compare


def test_imagereward_is_100x_mean_over_prompts(folder, tmp_path):
    root, items = folder
    fake = tmp_path / "fake-python"  # stands in for the ImageReward venv: reward = prompt length / 10 + k
    fake.write_text(f"#!{sys.executable}\nimport json, sys\n"
                    "args = dict(zip(sys.argv[2::2], sys.argv[3::2]))\n"
                    "m = json.load(open(args['--manifest']))\n"
                    "res = [{'id': it['id'], 'rewards': [len(it['prompt']) / 10 + k for k in range(len(it['images']))]}"
                    " for it in m['items']]\n"
                    "json.dump({'model': m['model'], 'results': res}, open(args['--output'], 'w'))\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    out = Scorer({"imagereward"}, imagereward_python=str(fake)).score(root / "gen", items)
    per_prompt = [np.mean([len(p) / 10 + k for k in range(3)]) for p in ("a large red circle in the center",
                                                                         "two small blue squares")]
    assert out["imagereward"] == pytest.approx(100 * np.mean(per_prompt))


def test_clip_score_and_iqa(folder, tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import CLIPConfig, CLIPModel, PreTrainedTokenizerFast

    from ilf.eval.metrics import CLIPMetrics

    root, items = folder
    words = ("a large red circle in the center two small blue squares good bad photo . noisy clear colorful dull "
             "natural synthetic").split()
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(["<pad>", "<unk>"] + words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>")
    torch.manual_seed(0)
    cfg = CLIPConfig(text_config=dict(vocab_size=len(words) + 2, hidden_size=32, intermediate_size=37,
                                      num_hidden_layers=1, num_attention_heads=4, max_position_embeddings=16),
                     vision_config=dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=37,
                                        num_hidden_layers=1, num_attention_heads=4), projection_dim=16)
    clip = CLIPMetrics(CLIPModel(cfg), tokenizer)
    out = Scorer({"clip"}, clip=clip, batch_size=4).score(root / "gen", items)
    images = _load(root / "gen", items)
    hand = float(clip.clip_score(images, [it.prompt for it in items]).mean())
    assert out["clip_score"] == pytest.approx(hand, rel=1e-5)
    assert out["clip_iqa_good"] == pytest.approx(float(clip.clip_iqa(images)["good"].mean()), rel=1e-5)
    assert set(out) == {"clip_score", "clip_iqa_good", "clip_iqa_noisy", "clip_iqa_colorful", "clip_iqa_natural"}


def test_asking_for_a_metric_without_its_inputs_names_the_flag():
    with pytest.raises(ILFError, match="--clip DIR"):
        build_scorer(groups=["clip"])
    with pytest.raises(ILFError, match="--inception"):
        build_scorer(groups=["fid"], fid_ref="stats.npz")
    with pytest.raises(ILFError, match="unknown metric groups"):
        build_scorer(groups=["lpips"])
    assert build_scorer().groups == {"fidelity"}

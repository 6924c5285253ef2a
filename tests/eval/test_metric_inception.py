"""The FID Inception network (random weights here: the real ones cannot be downloaded) and
clean-fid's preprocessing, checked against torchvision's published layout and a PIL hand computation."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from ilf.eval.metrics import (
    CleanFIDInception,
    FIDInceptionV3,
    MissingWeightsError,
    clean_preprocess,
    convert_weights_to_safetensors,
    load_fid_inception,
)
from ilf.eval.metrics.inception import InceptionE, _tf_avg_pool

# torchvision's inception_v3 has 27,161,264 parameters (1000 classes, with the auxiliary head of
# 98,560 + 2,459,136 + 769,000). Without the aux head and with TF's 1008 classes (+8 * 2049):
EXPECTED_PARAMS = 27_161_264 - (98_560 + 2_459_136 + 769_000) + 8 * 2049


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return FIDInceptionV3().eval()


@pytest.fixture(scope="module")
def pth_file(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "pt_inception.pth"
    torch.save(model.state_dict(), path)
    return path


def test_layout_matches_pytorch_fid_state_dict(model):
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert sum(p.numel() for p in model.parameters()) == EXPECTED_PARAMS
    for key, shape in {
        "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
        "Conv2d_1a_3x3.bn.running_var": (32,),
        "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
        "Mixed_6b.branch7x7_2.conv.weight": (128, 128, 1, 7),
        "Mixed_7a.branch3x3_2.conv.weight": (320, 192, 3, 3),
        "Mixed_7b.branch3x3dbl_1.conv.weight": (448, 1280, 1, 1),
        "Mixed_7c.branch3x3_2b.conv.weight": (384, 384, 3, 1),
        "fc.weight": (1008, 2048),
    }.items():
        assert shapes[key] == shape, key
    assert not any(k.startswith("AuxLogits") for k in shapes)
    bn_eps = {m.eps for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert bn_eps == {0.001}


def test_clean_preprocessing_matches_pil_by_hand():
    rng = np.random.default_rng(0)
    u8 = rng.integers(0, 256, size=(37, 53, 3), dtype=np.uint8)  # H=37, W=53
    # clean-fid's make_resizer("PIL", False, "bicubic", (299, 299)), written out
    channels = [Image.fromarray(u8[:, :, c].astype(np.float32), mode="F") for c in range(3)]
    hand = np.stack([np.asarray(ch.resize((299, 299), resample=Image.BICUBIC)) for ch in channels])
    hand = (hand - 128.0) / 128.0  # clean-fid's normalisation of [0, 255] input
    x = torch.from_numpy(u8).permute(2, 0, 1).float() / 255.0  # [3, 37, 53] as load_images gives it
    ours = clean_preprocess(x[None])
    assert ours.shape == (1, 3, 299, 299)
    np.testing.assert_array_equal(ours[0].numpy(), hand.astype(np.float32))
    # differently sized images go through one by one
    both = clean_preprocess([x, torch.rand(3, 20, 20)])
    np.testing.assert_array_equal(both[0].numpy(), hand.astype(np.float32))


def test_tf_average_pool_ignores_padding_and_7c_max_pools():
    ones = torch.ones(1, 2, 4, 5)
    torch.testing.assert_close(_tf_avg_pool(ones), ones)  # zero padding would make the corners 4/9
    x = torch.randn(1, 8, 3, 3, generator=torch.Generator().manual_seed(1))
    seen = {}
    for pool in ("avg", "max"):
        block = InceptionE(8, pool=pool).eval()
        block.branch_pool.register_forward_pre_hook(lambda m, a, pool=pool: seen.__setitem__(pool, a[0]))
        with torch.no_grad():
            block(x)
    # hand: 3x3 neighbourhoods with unfold; average over the real pixels only, max with -inf padding
    cols = F.unfold(x, 3, padding=1).view(1, 8, 9, 9)  # [1, C, 9 window taps, 9 positions]
    count = F.unfold(torch.ones(1, 1, 3, 3), 3, padding=1).view(1, 1, 9, 9).sum(2)
    torch.testing.assert_close(seen["avg"], (cols.sum(2) / count).view(1, 8, 3, 3))
    cols_max = F.unfold(F.pad(x, (1, 1, 1, 1), value=-1e9), 3).view(1, 8, 9, 9)
    torch.testing.assert_close(seen["max"], cols_max.max(2).values.view(1, 8, 3, 3))


def test_clean_fid_features_run_the_whole_network(model):
    record = {}
    model.Conv2d_1a_3x3.register_forward_pre_hook(lambda m, a: record.__setitem__("input", a[0]))
    for name in ("Mixed_5b", "Mixed_5d", "Mixed_6a", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c"):
        getattr(model, name).register_forward_hook(lambda m, a, out, name=name: record.__setitem__(name, out))
    image = torch.rand(1, 3, 48, 40, generator=torch.Generator().manual_seed(2))
    feats = CleanFIDInception(model)(image)
    assert feats.shape == (1, 2048) and torch.isfinite(feats).all()
    # shapes printed along torchvision's Inception3 forward
    assert {k: tuple(v.shape[1:]) for k, v in record.items() if k != "input"} == {
        "Mixed_5b": (256, 35, 35), "Mixed_5d": (288, 35, 35), "Mixed_6a": (768, 17, 17), "Mixed_6e": (768, 17, 17),
        "Mixed_7a": (1280, 8, 8), "Mixed_7b": (2048, 8, 8), "Mixed_7c": (2048, 8, 8),
    }
    torch.testing.assert_close(record["input"], clean_preprocess(image))
    torch.testing.assert_close(feats, record["Mixed_7c"].mean((2, 3)))  # the pool3 features


def _assert_same_state(a, b):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_weights_round_trip_through_pth_and_safetensors(model, pth_file, tmp_path):
    _assert_same_state(load_fid_inception(pth_file).state_dict(), model.state_dict())
    st = convert_weights_to_safetensors(pth_file, tmp_path / "fid_inception.safetensors")
    from safetensors.torch import load_file

    assert set(load_file(str(st))) == set(model.state_dict())
    _assert_same_state(load_fid_inception(st).state_dict(), model.state_dict())
    # older state dicts carry no BatchNorm counters: still accepted
    no_counters = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(no_counters, tmp_path / "old.pth")
    loaded = load_fid_inception(tmp_path / "old.pth").state_dict()
    key = "Mixed_6c.branch7x7dbl_3.conv.weight"
    torch.testing.assert_close(loaded[key], no_counters[key])


def test_wrong_or_missing_weights_say_where_to_get_them(model, tmp_path):
    with pytest.raises(MissingWeightsError, match="pt_inception-2015-12-05") as err:
        load_fid_inception(tmp_path / "absent.pth")
    assert isinstance(err.value, FileNotFoundError)

    state = dict(model.state_dict())
    state["Mixed_5b.branch1x1.conv.kernel"] = state.pop("Mixed_5b.branch1x1.conv.weight")
    torch.save(state, tmp_path / "renamed.pth")
    with pytest.raises(MissingWeightsError, match=r"Mixed_5b\.branch1x1\.conv\.weight"):
        load_fid_inception(tmp_path / "renamed.pth")

    state = dict(model.state_dict())
    state["fc.weight"] = torch.zeros(1000, 2048)  # torchvision's ImageNet head, not the TF one
    torch.save(state, tmp_path / "wrong_shape.pth")
    with pytest.raises(MissingWeightsError, match="wrong shape"):
        load_fid_inception(tmp_path / "wrong_shape.pth")


class _NotATensor:
    pass


def test_pickled_objects_are_refused_not_unpickled(tmp_path):
    torch.save({"weights": _NotATensor()}, tmp_path / "evil.pth")
    with pytest.raises(MissingWeightsError, match="weights_only"):
        load_fid_inception(tmp_path / "evil.pth")


def test_fid_pipeline_from_weight_file_to_statistics(model, pth_file, tmp_path):
    """The flow of CleanFIDInception's docstring up to the statistics, on random weights and mixed sizes."""
    from ilf.eval.metrics import compute_statistics, read_image, save_images
    from ilf.eval.metrics.inception import CLEAN_FID_TAG

    g = torch.Generator().manual_seed(5)
    save_images(torch.rand(1, 3, 40, 48, generator=g), tmp_path / "ref", ["a"])
    save_images(torch.rand(1, 3, 33, 33, generator=g), tmp_path / "ref", ["b"])  # another size: a ragged batch
    save_images(torch.rand(2, 3, 40, 48, generator=g), tmp_path / "gen", ["a", "b"])

    fid_net = CleanFIDInception.from_weights(pth_file)
    assert fid_net.tag == CLEAN_FID_TAG
    ref = compute_statistics(tmp_path / "ref", fid_net, cache=tmp_path / "ref.npz", tag=fid_net.tag, progress=False)
    with torch.no_grad():  # hand: each file read, preprocessed by clean-fid's recipe, through the network
        files = [tmp_path / "ref" / "a.png", tmp_path / "ref" / "b.png"]
        hand = model(clean_preprocess([read_image(f) for f in files])).double().numpy()
    np.testing.assert_allclose(ref.mu, hand.mean(0), rtol=1e-4, atol=1e-12)
    gen = compute_statistics(tmp_path / "gen", fid_net, tag=fid_net.tag, progress=False)
    assert gen.mu.shape == (2048,) and gen.sigma.shape == (2048, 2048) and gen.tag == ref.tag
    # (the 2048-d sqrtm of the distance itself takes ~1 min on 2 cores; test_metric_frechet covers it)
    with np.load(tmp_path / "ref.npz", allow_pickle=False) as cached:
        assert str(cached["tag"]) == CLEAN_FID_TAG

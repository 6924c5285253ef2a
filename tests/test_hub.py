"""Feedbacks on the Hugging Face Hub, with no network: a cache laid out as huggingface_hub lays it out (and
checked by its own `scan_cache_dir`), read through `snapshot_download` under HF_HUB_OFFLINE=1; pushing goes
through a stand-in for `HfApi`."""

import json
import os
import shutil

import pytest
import torch
from huggingface_hub import constants, scan_cache_dir
from huggingface_hub.file_download import repo_folder_name

from ilf import FeedbackNotFoundError, ILFConfig, apply_ilf, remove_ilf, save_feedback
from ilf.feedback import CONFIG_NAME, WEIGHTS_NAME
from ilf.io import sha256_file
from ilf.tiny import tiny_pipeline, tiny_pixart

LOOP = (2, 4)
REPO = "someone/pixart-ilf"
COMMITS = ("a" * 40, "b" * 40)


def _inputs(model):
    g = torch.Generator().manual_seed(0)
    return dict(hidden_states=torch.randn(2, 4, 8, 8, generator=g), timestep=torch.full((2,), 500),
                encoder_hidden_states=torch.randn(2, 5, model.config.caption_channels, generator=g),
                added_cond_kwargs={"resolution": None, "aspect_ratio": None})


def _run(model):
    with torch.no_grad():
        return model(**_inputs(model), ilf_t_post=300.0).sample


def _save(model, path, scale, **kwargs):
    rt = apply_ilf(model, ILFConfig(loop=LOOP))
    rt.feedback.scales.data.fill_(scale)
    expected = _run(model)
    save_feedback(model, path, **kwargs)
    remove_ilf(model)
    return expected


def put_in_hub_cache(cache, repo_id, folder, commit, ref="main"):
    """Lay `folder` out as huggingface_hub's cache holds a download: blobs, a snapshot of links, a ref."""
    repo = cache / repo_folder_name(repo_id=repo_id, repo_type="model")
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        blob = repo / "blobs" / sha256_file(f)
        blob.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, blob)
        link = repo / "snapshots" / commit / f.relative_to(folder)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    if ref:
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
    return repo / "snapshots" / commit


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """Two revisions of REPO in a cache: main -> COMMITS[0] (scales 0.5), COMMITS[1] (scales -0.3)."""
    assert constants.HF_HUB_OFFLINE  # tests never reach the network (conftest sets HF_HUB_OFFLINE=1)
    cache = tmp_path / "hub"
    model = tiny_pixart(num_layers=6)
    outputs = {}
    for commit, scale, ref in ((COMMITS[0], 0.5, "main"), (COMMITS[1], -0.3, None)):
        outputs[commit] = _save(model, tmp_path / f"fb-{scale}", scale)
        put_in_hub_cache(cache, REPO, tmp_path / f"fb-{scale}", commit, ref)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))  # what HF_HUB_CACHE / HF_HOME would say
    return cache, outputs


def test_the_cache_is_laid_out_as_huggingface_hub_reads_it(hub_cache):
    cache, _ = hub_cache
    (repo,) = scan_cache_dir(cache).repos
    assert repo.repo_id == REPO and {r.commit_hash for r in repo.revisions} == set(COMMITS)
    assert all({f.file_name for f in r.files} == {CONFIG_NAME, WEIGHTS_NAME} for r in repo.revisions)
    assert next(r for r in repo.revisions if r.commit_hash == COMMITS[0]).refs == frozenset({"main"})


def test_a_repo_id_loads_from_the_cache_offline_honouring_revision(hub_cache):
    cache, outputs = hub_cache
    model = tiny_pixart(num_layers=6)
    rt = apply_ilf(model, REPO)
    assert rt.config.loop == LOOP
    torch.testing.assert_close(_run(model), outputs[COMMITS[0]], rtol=0, atol=0)
    remove_ilf(model)
    apply_ilf(model, REPO, revision=COMMITS[1])
    torch.testing.assert_close(_run(model), outputs[COMMITS[1]], rtol=0, atol=0)
    remove_ilf(model)
    other = tiny_pixart(num_layers=6)  # an explicit cache_dir works the same
    apply_ilf(other, REPO, cache_dir=cache, revision="main")
    torch.testing.assert_close(_run(other), outputs[COMMITS[0]], rtol=0, atol=0)


def test_a_local_folder_of_the_same_name_wins(hub_cache, tmp_path, monkeypatch):
    model = tiny_pixart(num_layers=6)
    expected = _save(model, tmp_path / "local" / REPO, 0.9)
    monkeypatch.chdir(tmp_path / "local")
    apply_ilf(model, REPO)
    torch.testing.assert_close(_run(model), expected, rtol=0, atol=0)


def test_a_repo_missing_from_the_cache_offline_is_refused_clearly(hub_cache):
    model = tiny_pixart(num_layers=6)
    with pytest.raises(FeedbackNotFoundError, match="not in the Hugging Face cache.*HF_HUB_OFFLINE"):
        apply_ilf(model, "someone/not-downloaded")
    with pytest.raises(FeedbackNotFoundError, match="not in the Hugging Face cache"):
        apply_ilf(model, REPO, revision="c" * 40)
    assert not hasattr(model, "_diffusers_hook")


def test_the_config_records_the_base_model_as_peft_does(tmp_path):
    # a pipeline as from_pretrained("org/base") leaves it: its components read from a Hub cache snapshot
    tiny_pipeline("pixart-alpha", num_layers=6).save_pretrained(tmp_path / "pipe")
    snapshot = put_in_hub_cache(tmp_path / "hub", "org/base", tmp_path / "pipe", "d" * 40)
    from diffusers import PixArtTransformer2DModel

    model = PixArtTransformer2DModel.from_pretrained(snapshot / "transformer")
    _save(model, tmp_path / "fb", 0.5)
    meta = json.loads((tmp_path / "fb" / CONFIG_NAME).read_text())
    assert (meta["base_model_name_or_path"], meta["revision"]) == ("org/base", "d" * 40)
    _save(model, tmp_path / "fb2", 0.5, base_model_name_or_path="org/other", base_model_revision="v1.0")
    meta = json.loads((tmp_path / "fb2" / CONFIG_NAME).read_text())
    assert (meta["base_model_name_or_path"], meta["revision"]) == ("org/other", "v1.0")


class FakeHfApi:
    """Records what save_feedback asks of huggingface_hub's HfApi (no network)."""

    calls = []

    def __init__(self, token=None):
        self.token = token

    def create_repo(self, repo_id, private=None, exist_ok=False):
        FakeHfApi.calls.append(("create_repo", repo_id, private, exist_ok, self.token))
        return type("RepoUrl", (), {"repo_id": repo_id})()

    def upload_folder(self, *, repo_id, folder_path, revision=None, commit_message=None):
        files = sorted(os.listdir(folder_path))
        FakeHfApi.calls.append(("upload_folder", repo_id, files, commit_message))
        return "commit-info"


def test_push_to_hub_uploads_the_saved_folder(tmp_path, monkeypatch):
    monkeypatch.setattr("ilf.hub.HfApi", FakeHfApi)
    FakeHfApi.calls = []
    model = tiny_pixart(num_layers=6)
    apply_ilf(model, ILFConfig(loop=LOOP))
    save_feedback(model, tmp_path / "my-fb", push_to_hub=True, repo_id="me/my-fb", private=True, token="tok",
                  commit_message="first")
    assert FakeHfApi.calls == [("create_repo", "me/my-fb", True, True, "tok"),
                               ("upload_folder", "me/my-fb", sorted([CONFIG_NAME, WEIGHTS_NAME]), "first")]
    FakeHfApi.calls = []
    save_feedback(model, tmp_path / "named-after-folder", push_to_hub=True)
    assert FakeHfApi.calls[0][1] == "named-after-folder"


def test_a_config_from_a_newer_writer_loads_with_a_warning(tmp_path):
    model = tiny_pixart(num_layers=6)
    expected = _save(model, tmp_path / "fb", 0.5)
    meta = json.loads((tmp_path / "fb" / CONFIG_NAME).read_text())
    meta["config"].update(zz_future_option=10, zz_other_option="x")  # fields only a newer ilf knows
    meta["something_new"] = {"x": 1}
    (tmp_path / "fb" / CONFIG_NAME).write_text(json.dumps(meta))
    with pytest.warns(UserWarning, match=r"ignoring ILFConfig fields \['zz_future_option', 'zz_other_option'\]"):
        rt = apply_ilf(model, tmp_path / "fb")
    assert rt.config.loop == LOOP
    torch.testing.assert_close(_run(model), expected, rtol=0, atol=0)

"""Feedback folders on the Hugging Face Hub: resolve `"org/name"` through huggingface_hub, push a folder.

A local folder always wins; otherwise a repo-id-shaped name is fetched with `snapshot_download`, which
honours `revision=`, `HF_HUB_OFFLINE`, `HF_HUB_CACHE` and the local cache exactly as every other library
on the Hub does. The base model a feedback belongs to is recorded as peft records it
(`base_model_name_or_path`, `revision`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from huggingface_hub import HfApi, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from .errors import FeedbackNotFoundError

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# huggingface_hub's cache layout: <cache>/models--org--name/snapshots/<commit>/<file>
_CACHED = re.compile(r"models--(?P<org>[^/\\]+?)--(?P<name>[^/\\]+)[/\\]snapshots[/\\](?P<rev>[0-9a-f]{40})")


def is_repo_id(name: str) -> bool:
    return bool(_REPO_ID.match(name)) and ".." not in name


def resolve_feedback_folder(
    name_or_path: str | os.PathLike,
    files: list[str],
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
) -> Path:
    """A local feedback folder, or the snapshot of Hub repo `name_or_path` holding `files`."""
    path = Path(name_or_path)
    if path.exists() or not is_repo_id(str(name_or_path)):
        if revision is not None:
            raise FeedbackNotFoundError(f"revision={revision!r} applies to a Hub repo id, not the local path {path}")
        return path
    repo_id = str(name_or_path)
    where = f"{repo_id!r}" + (f" at revision {revision!r}" if revision else "")
    try:
        return Path(snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, token=token,
                                      allow_patterns=files))
    except LocalEntryNotFoundError:
        raise FeedbackNotFoundError(
            f"no local folder {str(path)!r}, and the feedback {where} is not in the Hugging Face cache while the "
            "Hub cannot be reached (HF_HUB_OFFLINE=1 or no network); download it once online "
            "(huggingface-cli download), or pass the path of a feedback folder"
        ) from None
    except RevisionNotFoundError:
        raise FeedbackNotFoundError(f"the Hub repo {repo_id!r} has no revision {revision!r}") from None
    except RepositoryNotFoundError:
        raise FeedbackNotFoundError(
            f"no local folder {str(path)!r}, and no Hub repo {repo_id!r} (or it is private: pass token=)"
        ) from None
    except EntryNotFoundError:
        raise FeedbackNotFoundError(f"the Hub repo {where} holds no ilf feedback ({', '.join(files)})") from None


WORLD_PREFIX = "ilf-world:"


def world_id(name_or_path: str) -> str | None:
    """`ilf-world:WORLD` when `name_or_path` is a shipped world backbone's folder (package data), else None:
    a feedback saved from a world pipeline records that name, which holds on every install, rather than the
    package's absolute path on the machine that saved it."""
    from .worlds import paths

    try:
        resolved = Path(name_or_path).resolve()
    except (OSError, ValueError):
        return None
    for world in paths.WORLDS:
        if resolved == paths.transformer(world).resolve():
            return WORLD_PREFIX + world
    return None


def base_model_of(model, pipeline=None) -> tuple[str | None, str | None]:
    """(name or path, revision) of the checkpoint `model` came from, as diffusers recorded it.

    A pipeline's `name_or_path` is the id the user passed; a component's `_name_or_path` is the folder it was
    read from, which inside the Hub cache (`models--org--name/snapshots/<commit>/…`) names repo and commit.
    """
    candidates = [str(n) for n in (getattr(pipeline, "name_or_path", None), model.config.get("_name_or_path")) if n]
    candidates = [world_id(n) or n for n in candidates]  # a shipped backbone by its world's name, not its folder
    cached = [m for m in map(_CACHED.search, candidates) if m]
    plain = [n for n in candidates if not _CACHED.search(n)]
    name = plain[0] if plain else (f"{cached[0]['org']}/{cached[0]['name']}" if cached else None)
    return name, (cached[0]["rev"] if cached else None)


def push_folder(
    folder: Path,
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | bool | None = None,
    commit_message: str | None = None,
    revision: str | None = None,
):
    """Create the model repo if needed and upload `folder` to it (huggingface_hub's HfApi); the commit info."""
    api = HfApi(token=token)
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
    return api.upload_folder(repo_id=repo_id, folder_path=str(folder), revision=revision,
                             commit_message=commit_message or "Upload ilf feedback")

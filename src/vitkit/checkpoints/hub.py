"""Files of Hugging Face hub repositories, fetched with `huggingface_hub` into its standard cache.

Only the files asked for are fetched. The environment is read at each call, not at import: HF_HUB_OFFLINE (cached
files only, no network try), HF_HUB_CACHE / HF_HOME (where the cache is), HF_ENDPOINT (a mirror); huggingface_hub
itself reads HF_TOKEN (gated and private repositories) and shows its progress bars (HF_HUB_DISABLE_PROGRESS_BARS=1
hides them). Every failure is one ValueError line naming the repository and the file, and how to place it by hand.

Verification: a file this call downloaded is checked against the hub's metadata at its snapshot's commit (its size;
for LFS files, whose ETag is their sha256, the sha256 of its bytes); on a mismatch it leaves the cache (blob and
snapshot link). A file already in the cache before the call is trusted, so a cached checkpoint is hashed once, when
it arrives, not at every load. Offline, or when the hub gives no metadata, the cached file is used unchecked.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import Any

SHA256 = re.compile(r"[0-9a-f]{64}")
_TRUE = ("1", "ON", "YES", "TRUE")


def offline() -> bool:
    """Hugging Face's offline switch (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE), read now, not at import."""
    from huggingface_hub import constants

    flag = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return flag.upper() in _TRUE or constants.is_offline_mode()


def cache_dir() -> Path:
    """The hub cache as the environment says now: HF_HUB_CACHE, else HF_HOME/hub, else huggingface_hub's default."""
    from huggingface_hub import constants

    env = os.environ
    path = env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE")
    if not path:
        path = os.path.join(env["HF_HOME"], "hub") if env.get("HF_HOME") else constants.HF_HUB_CACHE
    return Path(os.path.expandvars(path)).expanduser().resolve()


def _endpoint() -> str | None:
    """HF_ENDPOINT read now (huggingface_hub's constant is fixed at import); None: huggingface_hub's own."""
    return os.environ.get("HF_ENDPOINT", "").rstrip("/") or None


def _label(repo: str, revision: str | None, filename: str | None) -> str:
    at = f"hf-hub:{repo}" + (f"@{revision}" if revision else "")
    return f"{filename} of {at}" if filename else at


def _hint(repo: str, revision: str | None, files: Sequence[str]) -> str:
    args = " ".join([repo, *files, *(["--revision", revision] if revision else [])])
    return (f"download it where there is network (`hf download {args} --local-dir DIR`) and load the directory: "
            "vitkit.load_pretrained('DIR')")


def _chain(err: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__  # type: ignore[assignment]


def _why(err: BaseException, is_offline: bool) -> str:
    """What went wrong, in words, from whichever of huggingface_hub's exceptions `err` is or wraps."""
    from huggingface_hub import errors

    for exc in _chain(err):
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if isinstance(exc, errors.GatedRepoError):
            return (f"the repository is gated (HTTP {status}): accept its terms on its hub page, then set HF_TOKEN "
                    "to a token of that account or run `hf auth login`")
        if isinstance(exc, errors.RepositoryNotFoundError):
            return (f"no such repository (HTTP {status}), or it is private: check the name, or set HF_TOKEN / run "
                    "`hf auth login` if your account can read it")
        if isinstance(exc, errors.RevisionNotFoundError):
            return "no such revision (HTTP 404): check the branch, tag or commit after '@'"
        if isinstance(exc, errors.EntryNotFoundError) and not isinstance(exc, errors.LocalEntryNotFoundError):
            return "the repository has no such file (HTTP 404): check the file name"
        if isinstance(exc, errors.HfHubHTTPError) and status in (401, 403):
            return f"access refused (HTTP {status}): set HF_TOKEN to a token that can read it or run `hf auth login`"
        if is_offline or isinstance(exc, errors.OfflineModeIsEnabled):
            return _offline_why()
        if isinstance(exc, (ConnectionError, TimeoutError, socket.gaierror)):
            return (f"cannot reach {_endpoint() or 'the hub'} (no network, or connection refused: {exc}) and it is "
                    f"not in the local cache {cache_dir()}")
        if isinstance(exc, errors.HfHubHTTPError) and status is not None:
            return f"the hub answered HTTP {status}"
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def _offline_why() -> str:
    return f"offline (HF_HUB_OFFLINE is set) and not in the local cache {cache_dir()}"


def _fail(why: str, repo: str, revision: str | None, filename: str | None, files: Sequence[str]) -> ValueError:
    return ValueError(f"cannot fetch {_label(repo, revision, filename)}: {why}; {_hint(repo, revision, files)}")


def _hf(repo: str, revision: str | None, files: Sequence[str]) -> ModuleType:
    try:
        import huggingface_hub
    except ImportError as err:
        raise ValueError(f"cannot fetch {_label(repo, revision, ', '.join(files) or None)}: the hub needs the "
                         f"huggingface_hub package (pip install huggingface_hub), or {_hint(repo, revision, files)}"
                         ) from err
    return huggingface_hub


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _snapshot(path: Path, filename: str) -> Path:
    """The snapshot directory of a cached file: `path` less the parts of `filename`."""
    return path.parents[len(PurePosixPath(filename).parts) - 1]


def _verify(hf: ModuleType, repo: str, filename: str, path: Path, label: str) -> None:
    """Size and (LFS) sha256 of a file just downloaded against the hub's metadata at its commit; a mismatch
    removes it from the cache (snapshot link and blob) and raises."""
    url = hf.hf_hub_url(repo, filename, revision=_snapshot(path, filename).name, endpoint=_endpoint())
    try:
        meta = hf.get_hf_file_metadata(url)
    except Exception:  # no answer now: keep what huggingface_hub checked while downloading (the size)
        return
    size, problem = path.stat().st_size, None
    if meta.size is not None and size != meta.size:
        problem = f"expected {meta.size} bytes, got {size}"
    elif meta.etag and SHA256.fullmatch(meta.etag) and (got := _sha256(path)) != meta.etag:
        problem = f"expected sha256 {meta.etag}, got {got}"
    if problem:
        blob = Path(os.path.realpath(path))
        path.unlink(missing_ok=True)
        blob.unlink(missing_ok=True)
        raise ValueError(f"{label} arrived corrupt ({problem}) and was removed from the cache; fetch it again, "
                         "or check HF_ENDPOINT / your proxy")


def _fetch(repo: str, filename: str, revision: str | None, files: Sequence[str], commit: str | None = None) -> Path:
    """`filename` from the cache or the hub, verified when downloaded; `commit` pins the request (messages say
    `revision`), `files` go into the by-hand hint."""
    hf = _hf(repo, revision, files)
    is_offline, cache = offline(), cache_dir()
    try:
        before = hf.try_to_load_from_cache(repo, filename, cache_dir=cache, revision=commit or revision)
        path = Path(hf.hf_hub_download(repo, filename, revision=commit or revision, cache_dir=cache,
                                       endpoint=_endpoint(), local_files_only=is_offline))
    except Exception as err:  # the hub raises many types (HTTP, offline, not found, gated, network); one message
        raise _fail(_why(err, is_offline), repo, revision, filename, files) from err
    if not is_offline and before != str(path):
        _verify(hf, repo, filename, path, _label(repo, revision, filename))
    return path


def hub_file(repo: str, filename: str, revision: str | None = None) -> Path:
    """The local path of `filename` of hub repository `repo` (`org/name`) at `revision` (branch, tag or commit;
    None: the default branch), from the cache or downloaded and verified."""
    return _fetch(repo, filename, revision, [filename])


def hub_files(repo: str, filenames: Sequence[str], revision: str | None = None) -> Path:
    """The snapshot directory holding `filenames` of `repo` side by side, all of one commit: the first file's
    commit pins the others, so a branch moving meanwhile cannot mix two."""
    names = list(filenames)
    if not names:
        raise ValueError(f"hub_files was given no file names for {_label(repo, revision, None)}; name the files")
    first = _fetch(repo, names[0], revision, names)
    snapshot = _snapshot(first, names[0])
    for name in names[1:]:
        _fetch(repo, name, revision, names, commit=snapshot.name)
    return snapshot


def hub_json(repo: str, filename: str, revision: str | None = None) -> dict[str, Any]:
    """A JSON object file of `repo` (config.json, model.safetensors.index.json, ...), fetched and read."""
    path = hub_file(repo, filename, revision)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{_label(repo, revision, filename)} is not readable JSON ({path}): {err}") from err
    if not isinstance(data, dict):
        raise ValueError(f"{_label(repo, revision, filename)} holds {type(data).__name__}, not a JSON object")
    return data


def _cached_listing(repo: str, revision: str | None) -> list[str]:
    storage = cache_dir() / f"models--{repo.replace('/', '--')}"
    ref = storage / "refs" / (revision or "main")
    snapshot = storage / "snapshots" / (ref.read_text().strip() if ref.is_file() else revision or "main")
    return sorted(p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file())


def hub_listing(repo: str, revision: str | None = None) -> list[str]:
    """The file names of `repo` at `revision`: the hub's list, or offline (or when the hub does not answer) the
    files of the cached snapshot of that revision."""
    hf = _hf(repo, revision, [])
    failure: Exception | None = None
    if not offline():
        try:
            return sorted(hf.HfApi(endpoint=_endpoint()).list_repo_files(repo, revision=revision))
        except Exception as err:  # as huggingface_hub's downloads do: the cached snapshot if any, else the failure
            failure = err
    if cached := _cached_listing(repo, revision):
        return cached
    why = _why(failure, is_offline=False) if failure else _offline_why()
    raise _fail(why, repo, revision, None, []) from failure

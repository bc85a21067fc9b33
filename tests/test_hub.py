"""Hub downloads through huggingface_hub, against a local stand-in hub (tests/hub_helpers.py), never the network:
the cache layout, offline use, only the files asked for, resumed and corrupt downloads, one-line errors, tokens,
and `load_pretrained("hf-hub:...")` end to end."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save
from timm.models._hub import save_for_hf

import vitkit
from hub_helpers import HubServer, build_hub_cache, etag, git_sha1, isolate_hub, repo_dir, skip_retry_waits
from interop_helpers import assert_close, images, realistic_
from vitkit.checkpoints.hub import cache_dir, hub_file, hub_files, hub_json, hub_listing
from vitkit.checkpoints.sources import fetch_hub

REPO = "vitkit-tests/vit"
CONFIG = json.dumps({"architecture": "vit_tiny_patch16_224"}).encode()
FILES = {"config.json": CONFIG, "model.safetensors": os.urandom(4096), "pytorch_model.bin": os.urandom(512),
         "README.md": b"# a test repository\n"}


@pytest.fixture
def cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    isolate_hub(monkeypatch, tmp_path / "cache")
    return tmp_path / "cache"


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch, cache: Path) -> Iterator[HubServer]:
    with HubServer() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        yield hub


def closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def layout(storage: Path) -> dict[str, str]:
    """The files and links of a repository's cache folder: a link's target, a ref's commit, a blob's sha256."""
    out = {}
    for p in sorted(storage.rglob("*")):
        key = p.relative_to(storage).as_posix()
        if p.is_symlink():
            out[key] = "-> " + os.readlink(p)
        elif p.is_file():
            out[key] = p.read_text() if key.startswith("refs/") else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def test_offline_reads_the_cache_with_no_server(monkeypatch: pytest.MonkeyPatch, cache: Path) -> None:
    commit = build_hub_cache(cache, REPO, FILES)
    build_hub_cache(cache, REPO, {"config.json": b"{}"}, revision="v1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_ENDPOINT", closed_port())
    snapshot = repo_dir(cache, REPO) / "snapshots" / commit
    assert hub_file(REPO, "model.safetensors") == snapshot / "model.safetensors"
    assert hub_file(REPO, "model.safetensors").read_bytes() == FILES["model.safetensors"]
    assert hub_files(REPO, ["config.json", "model.safetensors"]) == snapshot
    assert hub_files(REPO, ["config.json"], revision=commit) == snapshot
    assert hub_json(REPO, "config.json") == json.loads(CONFIG) and hub_json(REPO, "config.json", "v1") == {}
    assert hub_listing(REPO) == sorted(FILES) and hub_listing(REPO, "v1") == ["config.json"]


def test_the_cache_follows_the_environment_at_call_time(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate_hub(monkeypatch, tmp_path / "cache")
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / "hub"
    commit = build_hub_cache(cache_dir(), REPO, {"config.json": CONFIG})
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub_file(REPO, "config.json") == repo_dir(cache_dir(), REPO) / "snapshots" / commit / "config.json"


def test_without_huggingface_hub_says_pip_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import fails as if not installed
    with pytest.raises(ValueError, match=r"config\.json of hf-hub:vitkit-tests/vit: .*pip install huggingface_hub"):
        hub_file(REPO, "config.json")


def test_offline_and_not_cached_is_one_clear_error(monkeypatch: pytest.MonkeyPatch, cache: Path) -> None:
    build_hub_cache(cache, REPO, {"config.json": CONFIG})
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match=r"^cannot fetch model\.safetensors of hf-hub:vitkit-tests/vit: offline "
                       r"\(HF_HUB_OFFLINE is set\) and not in the local cache .*`hf download vitkit-tests/vit "
                       r"config\.json model\.safetensors --local-dir DIR`.*load_pretrained\('DIR'\)$") as err:
        hub_files(REPO, ["config.json", "model.safetensors"])
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match=r"hf-hub:vitkit-tests/other: offline .*hf download vitkit-tests/other "):
        hub_listing("vitkit-tests/other")


def test_only_the_files_asked_for_come_in_the_real_cache_layout(server: HubServer, cache: Path) -> None:
    commit = server.add(REPO, FILES)
    snapshot = hub_files(REPO, ["config.json", "model.safetensors"])
    assert server.fetched() == [f"{REPO}/config.json", f"{REPO}/model.safetensors"]
    storage = repo_dir(cache, REPO)
    assert snapshot == storage / "snapshots" / commit
    config_blob, weights_blob = git_sha1(CONFIG), etag("model.safetensors", FILES["model.safetensors"])
    assert layout(storage) == {
        f"blobs/{config_blob}": hashlib.sha256(CONFIG).hexdigest(), f"blobs/{weights_blob}": weights_blob,
        "refs/main": commit, f"snapshots/{commit}/config.json": f"-> ../../blobs/{config_blob}",
        f"snapshots/{commit}/model.safetensors": f"-> ../../blobs/{weights_blob}"}
    built = cache.parent / "built"  # the helper writes what huggingface_hub wrote (its commit stands for 2 files)
    other = build_hub_cache(built, REPO, {k: FILES[k] for k in ("config.json", "model.safetensors")})
    assert json.dumps(layout(repo_dir(built, REPO))).replace(other, commit) == json.dumps(layout(storage))
    heads = len(server.seen)
    assert hub_files(REPO, ["config.json", "model.safetensors"]) == snapshot
    assert [s.method for s in server.seen[heads:]] == ["HEAD"]  # cached: main's commit asked for, no GET, no hash


def test_the_stand_in_hub_answers_model_info(server: HubServer) -> None:
    from huggingface_hub import HfApi

    commit = server.add(REPO, FILES, revision="v1")
    info = HfApi(endpoint=server.endpoint).model_info(REPO, revision="v1")
    assert info.sha == commit and sorted(s.rfilename for s in info.siblings) == sorted(FILES)
    lfs = {s.rfilename: s.lfs.sha256 for s in info.siblings if s.lfs}
    assert lfs == {n: etag(n, FILES[n]) for n in ("model.safetensors", "pytorch_model.bin")}


def test_a_cut_download_resumes_with_a_range_request(monkeypatch: pytest.MonkeyPatch, server: HubServer) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 1024)  # what arrived before the cut is kept
    waits = skip_retry_waits(monkeypatch)
    data = os.urandom(64 * 1024)
    server.add(REPO, {"model.safetensors": data})
    server.cut_once.add("model.safetensors")
    assert hub_file(REPO, "model.safetensors").read_bytes() == data
    gets = [s for s in server.seen if s.method == "GET"]
    assert [s.range for s in gets] == [None, "bytes=32768-"] and len(waits) == 1  # one retry, resumed


def test_a_corrupt_download_is_refused_and_leaves_no_trace(server: HubServer, cache: Path) -> None:
    data = FILES["model.safetensors"]
    server.add(REPO, FILES)
    server.corrupt.add("model.safetensors")
    with pytest.raises(ValueError, match=rf"model\.safetensors of hf-hub:{REPO} arrived corrupt \(expected sha256 "
                       rf"{etag('model.safetensors', data)}, got [0-9a-f]{{64}}\) and was removed from the cache"):
        hub_file(REPO, "model.safetensors")
    left = [p.name for p in repo_dir(cache, REPO).rglob("*") if p.is_file() or p.is_symlink()]
    assert left == ["main"] and not list(cache.rglob("*.incomplete"))  # only refs/main, which is true
    server.corrupt.clear()
    assert hub_file(REPO, "model.safetensors").read_bytes() == data


def test_not_found_and_refused_are_one_line_naming_repo_and_file(monkeypatch: pytest.MonkeyPatch,
                                                                 server: HubServer) -> None:
    server.add(REPO, FILES)
    cases = {("nope.json", None): r"nope\.json of hf-hub:vitkit-tests/vit: the repository has no such file \(HTTP",
             ("config.json", "v9"): r"config\.json of hf-hub:vitkit-tests/vit@v9: no such revision \(HTTP 404\)"}
    for (name, revision), expected in cases.items():
        with pytest.raises(ValueError, match=expected + r".*--local-dir DIR") as err:
            hub_file(REPO, name, revision)
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match=r"config\.json of hf-hub:vitkit-tests/gone: no such repository \(HTTP 401\)"):
        hub_file("vitkit-tests/gone", "config.json")
    skip_retry_waits(monkeypatch)
    monkeypatch.setenv("HF_ENDPOINT", closed_port())
    with pytest.raises(ValueError, match=r"^cannot fetch config\.json of hf-hub:vitkit-tests/vit: cannot reach "
                       r"http://127\.0\.0\.1:\d+ \(no network, or connection refused: .*\) and it is not in the "
                       r"local cache .*hf download vitkit-tests/vit config\.json") as err:
        hub_file(REPO, "config.json")
    assert "\n" not in str(err.value)


def test_unreachable_hub_falls_back_on_the_cache(monkeypatch: pytest.MonkeyPatch, cache: Path) -> None:
    commit = build_hub_cache(cache, REPO, FILES)
    skip_retry_waits(monkeypatch)
    monkeypatch.setenv("HF_ENDPOINT", closed_port())
    assert hub_listing(REPO) == sorted(FILES)
    assert hub_files(REPO, ["config.json", "model.safetensors"]) == repo_dir(cache, REPO) / "snapshots" / commit


def test_hf_token_is_sent_and_a_gated_repo_says_how(monkeypatch: pytest.MonkeyPatch, server: HubServer) -> None:
    server.add(REPO, FILES, token="hf_right")
    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    with pytest.raises(ValueError, match=r"config\.json of hf-hub:vitkit-tests/vit: the repository is gated "
                       r"\(HTTP 403\).*HF_TOKEN.*`hf auth login`"):
        hub_file(REPO, "config.json")
    monkeypatch.setenv("HF_TOKEN", "hf_right")
    start = len(server.seen)
    assert hub_json(REPO, "config.json") == json.loads(CONFIG)
    assert {s.authorization for s in server.seen[start:]} == {"Bearer hf_right"}


def test_load_pretrained_from_the_hub_then_offline(monkeypatch: pytest.MonkeyPatch, server: HubServer,
                                                   tmp_path: Path) -> None:
    theirs = realistic_(timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8,
                                          embed_dim=64, depth=2, num_heads=4, num_classes=3)).eval()
    save_for_hf(theirs, tmp_path / "timm", safe_serialization=True)  # model.safetensors + timm's config.json
    files = {p.name: p.read_bytes() for p in (tmp_path / "timm").iterdir()}
    server.add("timm-tests/vit_tiny", files | {"pytorch_model.bin": b"not fetched", "README.md": b"# vit\n"})
    x = images()
    mine = vitkit.load_pretrained("hf-hub:timm-tests/vit_tiny").eval()
    with torch.no_grad():
        assert_close(mine(x), theirs(x))
    assert server.fetched() == ["timm-tests/vit_tiny/config.json", "timm-tests/vit_tiny/model.safetensors"]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_ENDPOINT", closed_port())
    with torch.no_grad():
        assert_close(vitkit.load_pretrained("hf-hub:timm-tests/vit_tiny").eval()(x), theirs(x))


def test_fetch_hub_takes_an_index_and_its_shards_at_a_revision(server: HubServer) -> None:
    shards = {f"model-0000{i}-of-00002.safetensors": save({f"w{i}": torch.zeros(2)}) for i in (1, 2)}
    index = {"weight_map": {"w1": "model-00001-of-00002.safetensors", "w2": "model-00002-of-00002.safetensors"}}
    server.add(REPO, {**shards, "model.safetensors.index.json": json.dumps(index).encode(), "config.json": CONFIG,
                      "pytorch_model.bin": b"not fetched"}, revision="v2")
    snapshot = fetch_hub(f"{REPO}@v2")
    assert sorted(p.name for p in snapshot.iterdir()) == ["config.json", *shards, "model.safetensors.index.json"]
    assert sorted(server.fetched()) == sorted(f"{REPO}/{n}" for n in [*shards, "config.json",
                                                                       "model.safetensors.index.json"])
    server.repos[REPO].files.pop("model-00002-of-00002.safetensors")
    with pytest.raises(FileNotFoundError, match=r"names shards the repository does not have: model-00002"):
        fetch_hub(f"{REPO}@v2")

"""README.md's examples, run as written on tiny data, so the README cannot drift from the code.

Every ```bash and ```python block of README.md is either run here or skipped with its reason (SKIP_BLOCKS,
SKIP_COMMANDS); a command this file does not know how to run fails the test until it is taught or skipped.

How a block runs:
- All blocks share one working directory, in README order, as a reader runs them top to bottom: a block that needs
  what an earlier one made (`runs/digits`) runs after it, and `PRODUCERS` runs the earlier block first when a block is
  run alone (`pytest -k`). HOME is that directory, so `~/flowers` and `~/photos` are its tiny image folders
  (PLACEHOLDERS says what stands in for what the README assumes the reader has).
- bash: lines are joined at a trailing backslash as bash joins them, comments dropped, `a && b` split. `vitkit ...`
  and `python -m vitkit ...` run in-process through typer's CliRunner (a fresh `python` costs 5 s here) and must exit
  0; `python -c CODE` is exec'd. The only changes to a command are SUBSTITUTIONS (epochs, batch and image sizes).
- python: exec'd unchanged in a fresh namespace (each block imports what it uses).
- Published weights (`pretrained=True`, `--pretrained NAME.TAG`, `hf-hub:org/name`) come from a Hugging Face cache
  this file writes (HF_HUB_OFFLINE=1, nothing is downloaded): random weights in each repository's published layout,
  under the repository's name (HUB).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save
from typer.testing import CliRunner

import vitkit
from hub_helpers import build_hub_cache, isolate_hub
from vitkit.checkpoints.tags import pretrained_tag
from vitkit.cli import app

README = Path(__file__).resolve().parents[1] / "README.md"
ENV = {"COLUMNS": "200", "TTY_COMPATIBLE": "0", "FORCE_COLOR": None, "NO_COLOR": "1"}

# --- what is not run, and why -------------------------------------------------------------------------------------

# A block holding one of these strings is skipped whole.
SKIP_BLOCKS = {
    '--data digits32 --epochs 60': "the 60-epoch measurement (~14 min); the recipe block above trains on digits32",
    'create_model("qwen2_5_vl_vision_7b")': "a 7B VLM's 670M-parameter tower on ~720 tokens: ~2 min here; "
                                             "tests/test_qwen_vl.py runs these towers at reduced size",
    "towers/siglip2_naflex": "every line needs siglip2-base-patch16-naflex/, a downloaded HF directory; "
                             "tests/test_naflex.py loads such directories",
    "--checkpoint dinov3-vits16-pretrain-lvd1689m/": "needs dinov3-vits16-pretrain-lvd1689m/, a downloaded HF "
                                                     "directory; tests/test_rope.py loads DINOv3 directories",
    '"vit_base_patch16_224.safetensors"': "needs every checkpoint file it names (timm, HF, OpenCLIP, DINOv2/v3, "
                                          "big_vision, vit-pytorch downloads); tests/test_interop_*.py load each",
    "vitkit bench --model": "benchmarks: minutes each here; tests/test_bench.py runs them small",
    'pytest -m "not slow"': "the test suite (this file is part of it) and its linter",
}

# A command holding one of these strings is not run; the rest of its block is.
SKIP_COMMANDS = {
    "pip install": "installs packages",
    "pytest": "the test suite (this file is part of it)",
    "torchrun": "several processes or machines; tests/test_embed.py and tests/test_run_anywhere.py run torchrun",
    "vitkit bench": "a benchmark: minutes here; tests/test_bench.py, test_packing_bench.py run them small",
    "write_digits_folder('digits32')": "writes 1,797 JPEGs; a small digits32 stands in (PLACEHOLDERS)",
    "so400m/model.safetensors": "needs downloaded so400m weights; 428M parameters at 384 px",
    "Qwen2.5-VL-7B-Instruct/": "needs the downloaded Qwen2.5-VL-7B-Instruct/ directory",
    "my-siglip": "the reader's own so400m directory; its ONNX export is 1.7 GB",
}

# Blocks that take more than a few seconds here (still run in CI), by a string they hold.
SLOW_BLOCKS = {
    'create_model("vit_small_patch16_dinov3"': "Quick start: two 428M-parameter SigLIP towers, ViT-B weights",
    "vitkit doctor": "doctor compiles a model and exports one to ONNX",
    "--out runs/base": "two ViT-S trainings and a digits one",
    "--model-ema": "SigLIP-B (93M) with the whole recipe",
    "--token-drop 0.25": "a ViT-S training",
    'create_model("siglip2_base_patch16_naflex")': "a SigLIP2-B forward",
    "export_onnx": "two exports, each checked",
    "vitkit probe": "a digits training, features of its 1,797 images, a kNN and a probe",
    'create_model("vit_small_patch16_224.dino"': "ViT-S features of the photos, twice",
    "--format onnx digits.onnx": "two exports, each checked",
}

# --- what stands in for what the README assumes --------------------------------------------------------------------

PLACEHOLDERS = {
    "~/flowers, ~/photos, photos/": "3 classes x 8 RGB JPEGs of 40-80 px (HOME is the working directory)",
    "a.png b.png a.jpg b.jpg": "small RGB images",
    "digits32": "train/ + val/ of 3 classes, 32x32 JPEGs, as write_digits_folder writes them",
    "runs/vit_digits-20261123-101500, runs/vit_digits-...": "the newest runs/vit_digits-* the blocks made",
    "NAME.TAG, pretrained=True, hf-hub:": "HUB: random weights in a hand-built Hugging Face cache",
}

# Small sizes, so every training and embedding line runs in seconds on a 2-core CPU.
SUBSTITUTIONS = {
    "train: --epochs N -> --epochs 1 (added if absent)": "one epoch runs every per-epoch path (eval, EMA, saves)",
    "train on a folder: --batch-size N -> 8 (added if absent)": "the tiny folders hold 19 training images",
    "train: --img-size 224 -> 32": "the same model at 4 patches instead of 196",
    "--pretrained TAG, no --img-size: + --img-size SMALL_SIZE[TAG]": "the tag's model at 4-16 patches",
    "predict: [--json] -> --json": "the optional flag, given",
}
SMALL_SIZE = {"siglip_base_patch16_224.webli": 32, "vit_small_patch14_dinov2.lvd142m": 56}

# A block that reads what another block writes: (string in the reader, string of the writer block, path written).
PRODUCERS = [("runs/digits", "vitkit train --out runs/digits", "runs/digits")]


# --- the README's blocks ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    lang: str
    line: int  # of its first line of code in README.md
    section: str
    index: int  # 1-based, among the section's blocks
    text: str

    @property
    def id(self) -> str:
        return f"{re.split(r'[:(]', self.section)[0].strip()} #{self.index}"

    def reason(self, table: dict[str, str]) -> str | None:
        return next((why for key, why in table.items() if key in self.text), None)


def readme_blocks() -> list[Block]:
    lines = README.read_text().splitlines()
    blocks, section, counts, i = [], "", {}, 0
    while i < len(lines):
        if heading := re.match(r"#{1,3} (.+)", lines[i]):
            section = heading[1].strip()
        elif fence := re.fullmatch(r"```(\w+)", lines[i]):
            end = lines.index("```", i + 1)
            counts[section] = counts.get(section, 0) + 1
            blocks.append(Block(fence[1], i + 2, section, counts[section], "\n".join(lines[i + 1:end]) + "\n"))
            i = end
        i += 1
    return [b for b in blocks if b.lang in ("bash", "python")]


BLOCKS = readme_blocks()


def commands(text: str) -> list[list[str]]:
    """The commands of a bash block, as argument lists: continuations joined as bash joins them (backslash-newline
    removed), `#` comments dropped, `a && b` split."""
    found = []
    for line in text.replace("\\\n", "").splitlines():
        args: list[str] = []
        for token in [*shlex.split(line, comments=True), "&&"]:
            if token == "&&":
                found += [args] if args else []
                args = []
            else:
                args.append(token)
    return found


# --- the working directory: tiny data and the hub cache -------------------------------------------------------------


def image_folder(root: Path, per_class: int, size: Callable[[np.random.Generator], tuple[int, int]]) -> None:
    rng = np.random.default_rng(0)
    for label, name in enumerate(("daisy", "rose", "tulip")):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            h, w = size(rng)
            pixels = (rng.random((h, w, 3)) * 90 + 70 * label).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.jpg", quality=90)


def random_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {k: (torch.randn(v.shape, generator=gen) * 0.02).to(v.dtype) for k, v in model.state_dict().items()}


def tag_repo(name: str) -> tuple[str, dict[str, bytes]]:
    """A tag's repository: its model.safetensors (timm's layout: vitkit's keys), random weights."""
    tag = pretrained_tag(name)
    assert tag is not None and tag.layout == "timm" and tag.files == ("model.safetensors",), tag
    with torch.device("meta"):
        model = vitkit.create_model(tag.name)
    return tag.repo, {"model.safetensors": save(random_weights(model))}


def deepseek_vl2_repo() -> tuple[str, dict[str, bytes]]:
    """deepseek-ai/deepseek-vl2-tiny in its layout (the SigLIP tower under `vision.` in its own shard, beside the
    language model's; an index; the tower stated in config.json), at a small width and depth."""
    tower = vitkit.create_model("siglip_so400m_patch14_384", img_size=56, embed_dim=64, depth=2, num_heads=4,
                                num_classes=0)
    shards = {"model-00001-of-00002.safetensors": {"language.lm_head.weight": torch.randn(10, 8)},
              "model-00002-of-00002.safetensors": {f"vision.{k}": v for k, v in random_weights(tower).items()}}
    index = {"metadata": {}, "weight_map": {key: name for name, part in shards.items() for key in part}}
    config = {"model_type": "deepseek_vl_v2", "vision_config": {
        "model_type": "vision", "model_name": "siglip_so400m_patch14_384", "image_size": 56, "patch_size": 14,
        "width": 64, "layers": 2, "heads": 4, "mlp_ratio": 3.7362, "global_pool": "map", "ignore_head": True,
        "class_token": False, "num_classes": 0, "select_layer": -1}}
    files = {name: save(part) for name, part in shards.items()}
    files |= {"model.safetensors.index.json": json.dumps(index).encode(), "config.json": json.dumps(config).encode()}
    return "deepseek-ai/deepseek-vl2-tiny", files


# The hub repositories the run blocks name (by a string in the block) and how to write each.
HUB = {
    "vit_base_patch16_224.augreg2_in21k_ft_in1k": lambda: tag_repo("vit_base_patch16_224.augreg2_in21k_ft_in1k"),
    "vit_small_patch14_dinov2": lambda: tag_repo("vit_small_patch14_dinov2.lvd142m"),
    "siglip_base_patch16_224.webli": lambda: tag_repo("siglip_base_patch16_224.webli"),
    "vit_small_patch16_224.dino": lambda: tag_repo("vit_small_patch16_224.dino"),
    "hf-hub:deepseek-ai/deepseek-vl2-tiny": deepseek_vl2_repo,
}


class Workspace:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.cache = root / ".hf-cache"
        self.done: set[str] = set()
        self.repos: set[str] = set()
        image_folder(root / "flowers", 8, lambda rng: tuple(rng.integers(40, 80, 2)))
        image_folder(root / "photos", 8, lambda rng: tuple(rng.integers(40, 80, 2)))
        image_folder(root / "digits32" / "train", 8, lambda rng: (32, 32))
        image_folder(root / "digits32" / "val", 4, lambda rng: (32, 32))
        rng = np.random.default_rng(1)
        for name in ("a.png", "b.png", "a.jpg", "b.jpg"):
            Image.fromarray((rng.random((50, 60, 3)) * 255).astype(np.uint8)).save(root / name)

    def hub_for(self, text: str) -> None:
        for key, make in HUB.items():
            if key in text and key not in self.repos:
                repo, files = make()
                build_hub_cache(self.cache, repo, files)
                self.repos.add(key)

    def newest_digits_run(self) -> str:
        runs = sorted((self.root / "runs").glob("vit_digits-*"), key=lambda p: p.stat().st_mtime)
        assert runs, "no runs/vit_digits-* yet: the README's resume / eval / predict lines follow a `vitkit train`"
        return str(runs[-1].relative_to(self.root))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    root = tmp_path_factory.mktemp("readme")
    with pytest.MonkeyPatch.context() as mp:
        isolate_hub(mp, root / ".hf-cache")
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        mp.setenv("HOME", str(root))
        mp.chdir(root)
        yield Workspace(root)


# --- running a block ----------------------------------------------------------------------------------------------


def set_option(args: list[str], name: str, value: str) -> list[str]:
    if name in args:
        at = args.index(name) + 1
        return [*args[:at], value, *args[at + 1:]]
    return [*args, name, value]


def adapt(args: list[str], ws: Workspace) -> list[str]:
    """A vitkit command's arguments with PLACEHOLDERS resolved and SUBSTITUTIONS made."""
    args = [os.path.expanduser(a) if a.startswith("~") else a for a in args]  # as bash expands them
    args = [ws.newest_digits_run() if re.fullmatch(r"runs/vit_digits-(\d{8}-\d{6}|\.\.\.)", a) else a for a in args]
    args = ["--json" if a == "[--json]" else a for a in args]
    if args[0] == "train":
        args = set_option(args, "--epochs", "1")
        if "--data" in args and args[args.index("--data") + 1] != "digits":
            args = set_option(args, "--batch-size", "8")
        if "--img-size" in args and args[args.index("--img-size") + 1] == "224":
            args = set_option(args, "--img-size", "32")
    if args[0] in ("train", "embed") and "--pretrained" in args and "--img-size" not in args:
        tag = args[args.index("--pretrained") + 1]
        if tag in SMALL_SIZE:
            args = set_option(args, "--img-size", str(SMALL_SIZE[tag]))
    return args


def run_python(code: str, line: int, where: str) -> None:
    exec(compile("\n" * (line - 1) + code, where, "exec"), {"__name__": "__readme__"})


def run_command(args: list[str], block: Block, ws: Workspace) -> str:
    text = " ".join(args)
    if why := next((why for key, why in SKIP_COMMANDS.items() if key in text), None):
        return f"skipped  {text}  ({why})"
    started = time.perf_counter()
    if args[:2] == ["python", "-c"] and len(args) == 3:
        run_python(args[2], block.line, f"README.md ({block.id}): python -c")
    elif args[0] == "vitkit" or args[:3] == ["python", "-m", "vitkit"]:
        argv = adapt(args[1:] if args[0] == "vitkit" else args[3:], ws)
        result = CliRunner().invoke(app, argv, env=ENV)
        assert result.exit_code == 0, f"README.md {block.id}: vitkit {shlex.join(argv)}\n{result.output[-3000:]}"
    else:
        pytest.fail(f"README.md {block.id}: the test cannot run {text!r}; teach it, or add it to SKIP_COMMANDS")
    return f"{time.perf_counter() - started:5.1f} s  {text}"


def run_block(block: Block, ws: Workspace) -> list[str]:
    for needs, writer, path in PRODUCERS:
        if needs in block.text and writer not in block.text and not (ws.root / path).exists():
            run_block(next(b for b in BLOCKS if writer in b.text), ws)
    ws.hub_for(block.text)
    if block.lang == "python":
        started = time.perf_counter()
        run_python(block.text, block.line, f"README.md ({block.id})")
        log = [f"{time.perf_counter() - started:5.1f} s  python block"]
    else:
        log = [run_command(args, block, ws) for args in commands(block.text)]
    ws.done.add(block.id)
    return log


def is_slow(block: Block) -> bool:
    """In SLOW_BLOCKS, or reading what a slow block writes (PRODUCERS runs that block first when run alone)."""
    writers = [next(b for b in BLOCKS if w in b.text) for needs, w, _ in PRODUCERS if needs in block.text]
    return bool(block.reason(SLOW_BLOCKS)) or any(w is not block and is_slow(w) for w in writers)


def params() -> list:
    out = []
    for block in BLOCKS:
        marks = [pytest.mark.slow] if is_slow(block) else []
        out.append(pytest.param(block, id=block.id, marks=marks))
    return out


@pytest.mark.parametrize("block", params())
def test_readme_block_runs_as_written(block: Block, workspace: Workspace) -> None:
    if why := block.reason(SKIP_BLOCKS):
        pytest.skip(f"README.md line {block.line}: {why}")
    if block.id in workspace.done:  # run earlier as another block's producer
        return
    log = run_block(block, workspace)
    print(f"README.md {block.id} (line {block.line}):", *log, sep="\n  ")
    if all(line.startswith("skipped") for line in log):
        pytest.skip("; ".join(log))


def test_every_block_is_run_or_skipped_with_a_reason() -> None:
    """No block is silently left out: each is run, or skipped by an entry that still matches a block (a stale
    entry, matching nothing, fails here so the tables stay in step with the README)."""
    assert BLOCKS, "no ```bash / ```python blocks found in README.md"
    texts = "\n".join(b.text for b in BLOCKS)
    stale = [key for table in (SKIP_BLOCKS, SKIP_COMMANDS, SLOW_BLOCKS) for key in table if key not in texts]
    stale += [key for key in (*HUB, *SMALL_SIZE) if key not in texts] + [w for _, w, _ in PRODUCERS if w not in texts]
    assert not stale, f"entries that match no README block any more: {stale}"
    assert len({b.id for b in BLOCKS}) == len(BLOCKS)


def test_commands_are_split_as_bash_splits_them() -> None:
    text = 'pip install -e . && vitkit train   # note\nvitkit a \\\n      --b "c d" [--json]\npython -c "x; \\\ny"\n'
    assert commands(text) == [["pip", "install", "-e", "."], ["vitkit", "train"], ["vitkit", "a", "--b", "c d",
                              "[--json]"], ["python", "-c", "x; y"]]

"""Training, resuming, evaluating and predicting, end to end on real (bundled or generated) images."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from vitkit import create_model, save_pretrained
from vitkit.checkpoints import read_state_dict
from vitkit.cli import app
from vitkit.train import TrainOptions, train
from vitkit.train.model_setup import build_for_run, run_config

SRC = str(Path(__file__).resolve().parents[1] / "src")
QUICK = dict(epochs=2, batch_size=32, drop_path=0.0)  # small and free of per-rank randomness


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def step_losses(run: Path, field: str = "loss") -> list[float]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r[field] for r in records if r["kind"] == "step"]


def make_folder(root: Path, classes: int = 3, per_class: int = 12, size: int = 20) -> Path:
    """Generated PNGs: class c is a bright square in corner c on noise, so a small ViT can tell them apart."""
    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"class_{c}").mkdir(parents=True)
        for i in range(per_class):
            image = rng.integers(0, 60, (size + i % 3, size, 3), dtype=np.uint8)
            y, x = divmod(c, 2)
            image[y * size // 2 : (y + 1) * size // 2, x * size // 2 : (x + 1) * size // 2] = 230
            Image.fromarray(image).save(root / f"class_{c}" / f"{i}.png")
    return root


def assert_summary_table(output: str) -> None:
    """`vitkit train` ends with a titled table whose rows follow the top border: no empty header row."""
    lines = output.splitlines()
    titles = [i for i, line in enumerate(lines) if line.strip() == "training done"]
    assert titles, output
    title = titles[-1]
    table = lines[title + 1 :]
    assert "run directory" in table[1], "\n".join(lines[title:])  # under the top border, the first row
    assert not any(re.fullmatch(r"[\s│┃]+", line) for line in table), "\n".join(lines[title:])


@pytest.mark.slow
def test_default_train_command_learns_digits(tmp_path: Path) -> None:
    """The README's main job, unshortened: >= 97% validation accuracy on the bundled digits."""
    result = invoke("train", "--out", str(tmp_path / "run"))
    assert result.exit_code == 0, result.output
    assert "training done" in result.output
    run = tmp_path / "run"
    for name in ("config.json", "model.safetensors", "last.safetensors", "train_state.pt", "metrics.jsonl",
                 "curves.png", "labels.json", "train_options.json"):
        assert (run / name).is_file(), name
    epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    best = max(r["val_top1"] for r in epochs if r["kind"] == "epoch")
    assert best >= 0.97
    state = torch.load(run / "train_state.pt", weights_only=True)  # resumable state needs no pickle trust
    assert state["epoch"] == 30 and state["step"] == 30 * (1437 // 64)


def test_resume_after_interrupt_continues_the_same_curve(tmp_path: Path) -> None:
    straight = train(TrainOptions(out=str(tmp_path / "straight"), **QUICK))
    assert not straight.interrupted

    class InterruptAt:
        def start(self, *args: object) -> None: ...
        def epoch(self, record: dict) -> None: ...
        def close(self) -> None: ...

        def step(self, epoch: int, step: int, loss: float, rate: float, data_share: float) -> None:
            if step == 50:  # mid second epoch (44 steps each): as if Ctrl-C arrived
                os.kill(os.getpid(), signal.SIGINT)

    cut = train(TrainOptions(out=str(tmp_path / "cut"), **QUICK), reporter=InterruptAt())
    assert cut.interrupted and cut.epochs == 1 and cut.steps in (50, 51)  # the flag is read at a step boundary
    assert len(step_losses(tmp_path / "cut")) == cut.steps
    resumed = train(TrainOptions(), resume=tmp_path / "cut")
    assert not resumed.interrupted and resumed.steps == straight.steps
    assert step_losses(tmp_path / "cut") == step_losses(tmp_path / "straight")
    lrs = step_losses(tmp_path / "cut", "lr")
    assert lrs == step_losses(tmp_path / "straight", "lr")
    # metrics.jsonl logs the rate each step ran at: 88 steps, all in the 3-epoch warm-up, step k at lr * k / 88
    assert lrs == pytest.approx([TrainOptions().lr * k / 88 for k in range(1, 89)])
    for name in ("last.safetensors", "model.safetensors"):
        a, b = read_state_dict(tmp_path / "cut" / name), read_state_dict(tmp_path / "straight" / name)
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_resuming_a_finished_run_says_so_and_more_epochs_train_on(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(TrainOptions(out=str(run), epochs=1, batch_size=256))
    state = (run / "train_state.pt").read_bytes()
    done = invoke("train", "--resume", str(run))
    assert done.exit_code == 0, done.output
    assert done.output == f"{run} has finished: 1 of 1 epochs trained, best val top-1 " \
                          f"{100 * json.loads((run / 'config.json').read_text())['training']['val_top1']:.2f}%; " \
                          "to train on, add --epochs N (more than 1)\n"
    assert (run / "train_state.pt").read_bytes() == state  # nothing ran, nothing was written
    more = invoke("train", "--resume", str(run), "--epochs", "2")
    assert more.exit_code == 0, more.output
    assert_summary_table(more.output)
    assert torch.load(run / "train_state.pt", weights_only=True)["epoch"] == 2
    assert json.loads((run / "train_options.json").read_text())["epochs"] == 2  # a later --resume knows the total
    assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()
            if json.loads(line)["kind"] == "epoch"] == [0, 1]
    assert "2 of 2 epochs" in invoke("train", "--resume", str(run)).output
    fewer = invoke("train", "--resume", str(run), "--epochs", "1")
    assert fewer.exit_code == 1 and "--epochs 1 is fewer than the 2 epochs" in fewer.stderr


def test_fine_tuning_on_another_class_count_logs_the_new_head(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    save_pretrained(create_model("vit_tiny_patch16_224", depth=1, img_size=32, num_classes=3), tmp_path / "base")
    options = TrainOptions(pretrained=str(tmp_path / "base"))
    with caplog.at_level("INFO", logger="vitkit.train"):
        build_for_run(options, run_config(options), num_classes=3)
        assert not caplog.records  # the head fits: it is loaded, nothing to say
        model = build_for_run(options, run_config(options), num_classes=4)
    assert model.num_classes == 4
    [record] = caplog.records
    assert record.getMessage() == (f"--pretrained {tmp_path / 'base'}: replacing its 3-class head; training a new "
                                   "4-class head (the data has 4 classes)")


def test_image_folder_train_eval_predict(tmp_path: Path) -> None:
    data = make_folder(tmp_path / "shapes")
    run = tmp_path / "run"
    result = invoke("train", "--model", "vit_tiny_patch16_224", "--img-size", "32", "--data", str(data),
                    "--val-split", "0.25", "--epochs", "2", "--batch-size", "9", "--out", str(run))
    assert result.exit_code == 0, result.output
    assert_summary_table(result.output)
    table = result.output.split("optimizer parameter groups")[1].split("└")[0]
    assert re.findall(r"^│ (\w[\w ,]*?)\s+│", table, re.MULTILINE) == ["no decay", "decay"]
    assert json.loads((run / "labels.json").read_text()) == ["class_0", "class_1", "class_2"]
    result = invoke("eval", "--checkpoint", str(run), "--data", str(data), "--val-split", "0.25", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["count"] == 9 and 0.0 <= report["top1"] <= report["top5"] <= 1.0
    assert set(report["per_class"]) == {"class_0", "class_1", "class_2"}
    assert Image.open(report["confusion_png"]).size[0] > 100
    image = data / "class_1" / "0.png"
    result = invoke("predict", "--checkpoint", str(run), "--top-k", "2", "--json", str(image))
    assert result.exit_code == 0, result.output
    [prediction] = json.loads(result.stdout)
    assert prediction["image"] == str(image) and len(prediction["top"]) == 2
    probs = [t["probability"] for t in prediction["top"]]
    assert probs == sorted(probs, reverse=True) and sum(probs) <= 1.0 + 1e-6
    assert "class_" in invoke("predict", "--checkpoint", str(run), str(image)).stdout


def test_eval_on_a_digits_run(tmp_path: Path) -> None:
    train(TrainOptions(out=str(tmp_path / "run"), epochs=1, batch_size=64))
    result = invoke("eval", "--checkpoint", str(tmp_path / "run"))
    assert result.exit_code == 0, result.output
    assert "top-1" in result.stdout and (tmp_path / "run" / "confusion.png").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("sharding", [[], ["--fsdp"]], ids=["ddp", "fsdp2"])
def test_two_process_torchrun_matches_one_process(tmp_path: Path, sharding: list[str]) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    args = ["-m", "vitkit", "train", "--epochs", "1", "--batch-size", "32", "--drop-path", "0"]
    one = subprocess.run([sys.executable, *args, "--out", str(tmp_path / "one")], env=env, capture_output=True,
                         text=True, timeout=600)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
                          "29517", *args, *sharding, "--out", str(tmp_path / "two")], env=env, capture_output=True,
                         text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = step_losses(tmp_path / "one"), step_losses(tmp_path / "two")
    assert len(a) == len(b) == 1437 // 32
    np.testing.assert_allclose(b, a, atol=1e-5, rtol=0)


@pytest.mark.slow
def test_hard_kill_leaves_the_last_checkpoint_intact(tmp_path: Path) -> None:
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "vitkit", "train", "--epochs", "20", "--save-every", "3",
                             "--out", str(run)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not (run / "train_state.pt").exists():
        time.sleep(0.5)
    time.sleep(2.0)
    proc.kill()
    proc.wait()
    state = torch.load(run / "train_state.pt", weights_only=True)
    assert state["step"] > 0 and (state["step"] % 3 == 0 or state["step_in_epoch"] == 0)
    resumed = train(TrainOptions(), resume=run)
    assert resumed.epochs == 20 and not resumed.interrupted


@pytest.mark.parametrize("args,message", [
    (["--data", "/no/such/dir", "--val-split", "0.2"], "not found"),
    (["--batch-size", "0"], "--batch-size"),
    (["--model", "vit_gigantic"], "unknown model"),
    (["--resume", "."], "not a vitkit run directory"),
    (["--precision", "fp8"], "--precision"),
])
def test_bad_input_is_one_line_and_nonzero(tmp_path: Path, args: list[str], message: str) -> None:
    result = invoke("train", "--out", str(tmp_path / "run"), *args)
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and message in result.stderr
    assert not (tmp_path / "run").exists()


def test_bad_image_folders_fail_clearly(tmp_path: Path) -> None:
    data = make_folder(tmp_path / "data", classes=2, per_class=3)
    (data / "class_2").mkdir()
    result = invoke("train", "--data", str(data), "--val-split", "0.3", "--out", str(tmp_path / "run"))
    assert result.exit_code == 1 and "class_2" in result.stderr and "no images" in result.stderr
    (data / "class_2" / "broken.png").write_bytes(b"not a png at all")
    result = invoke("train", "--data", str(data), "--val-split", "0.3", "--out", str(tmp_path / "run"))
    assert result.exit_code == 1 and "broken.png" in result.stderr
    assert not (tmp_path / "run").exists()


def test_existing_run_is_never_overwritten(tmp_path: Path) -> None:
    train(TrainOptions(out=str(tmp_path / "run"), epochs=1, batch_size=256))
    before = (tmp_path / "run" / "model.safetensors").read_bytes()
    result = invoke("train", "--out", str(tmp_path / "run"), "--epochs", "1")
    assert result.exit_code == 1 and "--resume" in result.stderr
    assert (tmp_path / "run" / "model.safetensors").read_bytes() == before

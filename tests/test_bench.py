"""`vitkit bench` and `vitkit.bench`: FLOP counts, candidates, the worker, the three benchmarks end to end.

End-to-end runs use vit_tiny at 32 px (4 tokens), two steps and one thread (fast even on a busy
machine). No test asserts a speed: only that every number is there and consistent.
"""

from __future__ import annotations

import dataclasses
import io
import json
import sys
from pathlib import Path

import pytest
import torch
from rich.console import Console
from rich.text import Text
from typer.testing import CliRunner

from vitkit.bench import runner
from vitkit.bench.attention_bench import AttentionBenchSettings
from vitkit.bench.candidates import PEERS
from vitkit.bench.flops import analytic_flops, block_gemms, counted_flops
from vitkit.bench.live_tensors import LiveTensorBytes
from vitkit.bench.measure import summarize
from vitkit.bench.memory_bench import MemoryBenchSettings
from vitkit.bench.report import _remarks, attention_table, memory_table, model_table, packing_table, tower_table
from vitkit.bench.runner import ModelBenchSettings, Row, run_worker
from vitkit.bench.spec import CandidateSpec
from vitkit.bench.worker import run_candidate
from vitkit.cli import app
from vitkit.cli.bench import parse_ints
from vitkit.cli.output import print_table
from vitkit.models import build_model, config_from_dict, get_config, simple_vit_config

ENV = {"COLUMNS": "250", "TTY_COMPATIBLE": "0", "FORCE_COLOR": None, "NO_COLOR": "1"}
TINY = ("--model", "vit_tiny_patch16_224", "--img-size", "32", "--batch-size", "2", "--steps", "2", "--warmup", "1",
        "--threads", "1")
METRICS = ("img_per_s", "img_per_s_min", "img_per_s_max", "ms_per_step", "ms_per_step_min", "ms_per_step_max",
           "spread_pct", "peak_mem_mb", "base_mem_mb", "tensor_mem_mb", "gflops_per_image", "gflops_counted",
           "gflops_per_s", "ceiling_gflops_per_s", "efficiency", "ratio")


def invoke(*args: str):
    return CliRunner().invoke(app, list(args), env=ENV)


def meta_model(config):
    """The model on the meta device (no memory, nothing computed), with attention that runs there."""
    with torch.device("meta"):
        return build_model(config.replace(weight_init="skip"))


@pytest.fixture
def inprocess_workers(monkeypatch):
    """Run each candidate in this process (`run_candidate`) instead of a fresh one: the same code path
    minus the interpreter start, which costs seconds per candidate. The subprocess path is tested too."""
    from vitkit.bench import memory_bench, runner
    from vitkit.bench.measure import torch_threads

    def run_here(spec):
        with torch_threads(torch.get_num_threads()):  # run_candidate sets the thread count for its process
            return json.loads(json.dumps(run_candidate(spec)))

    monkeypatch.setattr(runner, "run_worker", run_here)
    monkeypatch.setattr(memory_bench, "run_worker", run_here)


def tiny_spec(candidate: str, config=None, **changes) -> CandidateSpec:
    config = config or get_config("vit_digits").replace(pos_embed="learn")  # a table every peer can hold
    base = dict(modes=("infer",), batch_size=2, steps=1, warmup=0, threads=1)
    return CandidateSpec(candidate, config.to_dict(), **{**base, **changes})


# --- FLOPs ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("train", [False, True], ids=["forward", "train"])
def test_vit_b16_flops_match_flop_counter_within_2_percent(train):
    config = get_config("vit_base_patch16_224")
    counted = counted_flops(meta_model(config), torch.empty(1, 3, 224, 224, device="meta"), train=train)
    analytic = analytic_flops(config, train=train)
    assert analytic == pytest.approx(counted, rel=0.02)
    if not train:
        assert analytic / 1e9 == pytest.approx(35.13, abs=0.01)  # 17.56 GMACs, as timm reports


@pytest.mark.parametrize("config", [
    get_config("siglip_base_patch16_224").replace(img_size=64),
    get_config("vit_small_patch16_224").replace(img_size=64, reg_tokens=4, mlp_layer="swiglu"),
    get_config("vit_small_patch16_224").replace(img_size=64, mlp_layer="swiglu_packed", num_classes=0),
    simple_vit_config(64, 16, 1000, dim=128, depth=2, heads=4, mlp_dim=256, dim_head=48),
    get_config("siglip_base_patch16_224").replace(img_size=64, mlp_hidden_dim=1000, head_dim=48),
], ids=["siglip-map", "registers-swiglu", "swiglu-packed-headless", "simple-vit", "map-mlp-width-head-dim"])
def test_analytic_flops_match_the_counter_across_families(config):
    images = torch.empty(1, 3, 64, 64, device="meta")
    assert analytic_flops(config) == counted_flops(meta_model(config), images)


def test_counter_also_counts_sdpa_fused_cpu_kernel():
    config = get_config("vit_tiny_patch16_224").replace(img_size=32, depth=2)
    model = build_model(config)
    cpu = counted_flops(model, torch.randn(1, 3, 32, 32))
    assert cpu == counted_flops(meta_model(config), torch.empty(1, 3, 32, 32, device="meta"))
    assert cpu == analytic_flops(config)


def test_block_gemms_are_the_blocks_forward_and_backward_products():
    config = get_config("vit_base_patch16_224")
    forward = block_gemms(config, batch_size=2)
    assert [g.name for g in forward] == ["qkv", "attn.scores", "attn.values", "proj", "fc1", "fc2"]
    assert forward[0].m == 2 * 197 and forward[1].batch == 2 * 12
    per_image_blocks = 12 * sum(g.flops for g in forward) / 2
    assert per_image_blocks == pytest.approx(analytic_flops(config), rel=0.01)
    assert forward[0].right_t and forward[1].right_t and not forward[2].right_t  # x @ W^T, q @ k^T, p @ v
    train = block_gemms(config, batch_size=2, train=True)
    assert len(train) == 18 and sum(g.flops for g in train) == 3 * sum(g.flops for g in forward)
    grad_in, grad_w = train[6:8]  # qkv's backward: dY @ W (W contiguous), X^T @ dY (X transposed)
    assert (grad_in.name, grad_in.right_t, grad_w.name, grad_w.left_t) == ("qkv.grad_in", False, "qkv.grad_w", True)


# --- measuring helpers ----------------------------------------------------------------------------


def test_summarize_reports_median_and_spread():
    stats = summarize([0.1, 0.3, 0.2, 0.2], batch_size=4)
    assert stats["ms_per_step"] == pytest.approx(200.0)
    assert stats["img_per_s"] == pytest.approx(20.0)
    assert (stats["ms_per_step_min"], stats["ms_per_step_max"]) == pytest.approx((100.0, 300.0))
    assert stats["img_per_s_max"] == pytest.approx(40.0)
    assert stats["spread_pct"] == pytest.approx(100.0 * (0.225 - 0.175) / 0.2)
    assert summarize([0.5], batch_size=1)["spread_pct"] == 0.0


def test_live_tensor_bytes_sees_the_score_matrix_of_math_attention_only():
    q, k, v = (torch.randn(1, 2, 256, 16) for _ in range(3))
    peaks = {}
    for backend in ("math", "sdpa"):
        counter = LiveTensorBytes()
        with counter:
            from vitkit.attention import scaled_dot_product_attention

            scaled_dot_product_attention(q, k, v, backend=backend)
        peaks[backend] = counter.peak
    scores = 2 * 256 * 256 * 4
    assert peaks["math"] >= scores > peaks["sdpa"] >= q.numel() * 4


def test_live_tensor_bytes_ignores_views_and_aliases_of_tensors_made_before():
    before = torch.randn(1024, 256)
    counter = LiveTensorBytes()
    with counter:
        kept = [before.to(torch.float32), before.view(256, 1024), before[:512], before.t()]
        assert counter.peak == 0
        made = before * 2  # a new tensor, and its views, count once
        kept += [made.view(-1), made[:10]]
    assert counter.peak == made.numel() * 4
    assert kept


def test_remarks_name_the_mode_only_when_it_matters():
    rows = [dataclasses.asdict(row) for row in (
        Row("timm", "infer", "skipped", reason="not installed"),
        Row("timm", "train", "skipped", reason="not installed"),
        Row("vitkit:flex", "infer", "ok"), Row("vitkit:flex", "train", "skipped", reason="no backward"),
    )]
    assert _remarks(rows, "candidate", "mode") == ["timm: not installed", "vitkit:flex (train): no backward"]


# --- candidates, in this process ------------------------------------------------------------------


def test_worker_times_vitkit_and_counts_its_flops():
    result = run_candidate(tiny_spec("vitkit", modes=("infer", "train"), steps=2))
    assert result["library"].startswith("vitkit ") and result["params"] > 0
    for mode, outcome in result["modes"].items():
        assert outcome["status"] == "ok", outcome
        assert len(outcome["step_s"]) == 2 and outcome["peak_mem_mb"] >= outcome["base_mem_mb"] > 0
        config = get_config("vit_digits")
        assert outcome["flops_counted"] == pytest.approx(analytic_flops(config, train=mode == "train"), rel=0.02)
        assert outcome["notes"] == "attention auto -> sdpa"


@pytest.mark.slow
def test_timm_runs_on_vitkits_weights_so_the_architecture_is_the_same():
    result = run_candidate(tiny_spec("timm"))
    assert result["library"].startswith("timm ")
    assert result["modes"]["infer"]["status"] == "ok", result
    assert result["modes"]["infer"]["notes"] == "vitkit's weights (identical state dict)"


@pytest.mark.parametrize("name", ["vit_tiny_patch16_224", "siglip_base_patch16_224"])
@pytest.mark.parametrize("candidate", ["timm", "hf"])
def test_timm_and_hf_rows_build_from_the_exporters_configs(candidate, name):
    """The peers are built from what `vitkit convert --to timm/hf` writes: a class-token ViT and a MAP tower."""
    config = get_config(name).replace(depth=1, embed_dim=32, num_heads=2, img_size=32)
    result = run_candidate(tiny_spec(candidate, config))
    assert result["modes"]["infer"]["status"] == "ok", result


@pytest.mark.parametrize(("candidate", "changes", "reason"), [
    ("vitkit", {"attention": "flash"}, "attention backend 'flash' needs a cuda device"),
    ("vitkit", {"attention": "flex", "modes": ("train",)}, "has no backward pass on cpu"),
    ("hf", {}, "HF SiglipVisionModel cannot build this model: it needs MAP pooling"),
    ("vit-pytorch-flash", {}, "builds SimpleViT only"),
    ("timm", {"grad_checkpointing": 2, "modes": ("train",)}, "timm recomputes all 4 blocks or none; asked for 2"),
], ids=["backend-not-here", "no-backward", "hf-pooling", "simple-only", "partial-checkpointing"])
def test_what_cannot_run_is_a_skipped_row_with_the_reason(candidate, changes, reason):
    result = run_candidate(tiny_spec(candidate, **changes))
    (outcome,) = result["modes"].values()
    assert outcome["status"] == "skipped"
    assert reason in outcome["reason"]


def test_a_peer_whose_import_fails_inside_the_worker_is_skipped(monkeypatch):
    monkeypatch.setitem(sys.modules, "vit_pytorch", None)  # what a missing or broken install looks like
    result = run_candidate(tiny_spec("vit-pytorch", modes=("infer", "train")))
    assert [o["status"] for o in result["modes"].values()] == ["skipped", "skipped"]
    assert "vit-pytorch cannot be imported here" in result["modes"]["infer"]["reason"]
    assert "pip install vit-pytorch" in result["modes"]["infer"]["reason"]


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_onnxruntime_runs_vitkits_exported_model(precision):
    """The onnxruntime row is vitkit's own model exported to ONNX: the same outputs (fp32), or close to them (int8
    weights by onnxruntime's dynamic quantization)."""
    config = get_config("vit_digits")
    spec = tiny_spec("onnxruntime", config, precision=precision)
    torch.manual_seed(0)
    built = PEERS["onnxruntime"].build(config, torch.device("cpu"), spec)
    torch.manual_seed(0)
    reference = build_model(config).eval()
    assert not built.in_torch and built.params == sum(p.numel() for p in reference.parameters())
    images = torch.randn(spec.batch_size, 1, 8, 8)  # the graph takes the batch's shape; not the batch itself
    with torch.no_grad():
        expected = reference(images)
    got = built.model(images)
    assert got.shape == expected.shape
    if precision == "fp32":
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    else:
        assert not torch.allclose(got, expected, atol=1e-4)  # quantized: near, not equal
        assert torch.nn.functional.cosine_similarity(got, expected).min() > 0.99
        assert "quantize_dynamic" in built.notes
    result = run_candidate(spec)
    outcome = result["modes"]["infer"]
    assert outcome["status"] == "ok", outcome
    assert result["library"].startswith("onnxruntime ") and result["params"] == built.params
    assert outcome["flops_counted"] is None and outcome["tensor_mem_mb"] is None
    assert "exported to ONNX" in outcome["notes"] and "a runtime outside torch" in outcome["notes"]


def test_compile_leaves_the_onnxruntime_row_as_it_is_and_says_so():
    outcome = run_candidate(tiny_spec("onnxruntime", compile=True, warmup=1))["modes"]["infer"]
    assert outcome["status"] == "ok", outcome
    assert "not compiled (torch.compile takes torch models)" in outcome["notes"]


@pytest.mark.parametrize(("changes", "skipped"), [
    ({"modes": ("infer", "train")}, {"train": "onnxruntime runs infer only"}),
    ({"precision": "bf16"}, {"infer": "onnxruntime's CPU provider runs fp32 and int8, not bf16"}),
    ({"device": "cuda"}, {"infer": "the onnxruntime peer runs on the CPU"}),
], ids=["train", "bf16", "cuda"])
def test_what_onnxruntime_cannot_run_is_skipped_with_the_reason(changes, skipped):
    spec = tiny_spec("onnxruntime", **changes)
    found = PEERS["onnxruntime"].skips(config_from_dict(spec.config), spec)
    assert set(found) == set(skipped)
    for mode, reason in skipped.items():
        assert reason in found[mode]


def test_bench_help_names_every_peer():
    result = invoke("bench", "--help")
    assert result.exit_code == 0
    for name in PEERS:
        assert name in result.stdout


@pytest.mark.slow
def test_a_worker_that_crashes_becomes_failed_rows():
    spec = dataclasses.replace(tiny_spec("vitkit", modes=("infer", "train")), config={"family": "nope"})
    result = run_worker(spec)
    assert [o["status"] for o in result["modes"].values()] == ["failed", "failed"]
    assert "worker exited with status 1" in result["modes"]["train"]["reason"]
    assert "family 'nope'" in result["modes"]["train"]["reason"]


# --- vitkit bench (the model benchmark) -----------------------------------------------------------


def check_model_report(path, modes, candidates):
    report = json.loads(path.read_text())
    assert set(report) == {"benchmark", "settings", "machine", "baselines", "rows"}
    assert report["settings"]["modes"] == list(modes) and list(report["baselines"]) == list(modes)
    assert [(r["candidate"], r["mode"]) for r in report["rows"]] == [(c, m) for m in modes for c in candidates]
    columns = {f.name for f in dataclasses.fields(Row)}
    for row in report["rows"]:
        assert set(row) == columns
        if row["status"] == "ok":
            assert all(row[key] is not None for key in METRICS), row
            assert row["gflops_counted"] == pytest.approx(row["gflops_per_image"], rel=0.02)
            assert row["gflops_per_s"] == pytest.approx(row["gflops_per_image"] * row["img_per_s"])
            assert row["img_per_s_min"] <= row["img_per_s"] <= row["img_per_s_max"]
            assert row["efficiency"] == pytest.approx(row["gflops_per_s"] / row["ceiling_gflops_per_s"])
    for mode, base in report["baselines"].items():
        ratios = [r["ratio"] for r in report["rows"] if r["candidate"] == base and r["mode"] == mode]
        assert ratios == ([] if base is None else [1.0])
    return report


@pytest.mark.slow
def test_bench_infer_writes_every_column_and_skips_a_missing_peer(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "vit_pytorch", None)  # not installed, as find_spec sees it
    result = invoke("bench", *TINY, "--mode", "infer", "--peers", "vit-pytorch", "--json", str(tmp_path / "r.json"),
                    "--plot", str(tmp_path / "r.png"))
    assert result.exit_code == 0, result.output
    report = check_model_report(tmp_path / "r.json", ["infer"], ["vitkit", "vit-pytorch"])
    vitkit, peer = report["rows"]
    assert vitkit["status"] == "ok" and vitkit["ratio"] == 1.0  # no peer ran: the ratio is against vitkit
    assert peer["status"] == "skipped"
    assert peer["reason"] == "vit-pytorch is not installed; fix: pip install vit-pytorch"
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "vit-pytorch: vit-pytorch is not installed" in result.stdout
    assert report["settings"]["threads"] == 1 and report["machine"]["torch_threads"] == 1


def test_bench_train_writes_every_column(tmp_path, inprocess_workers):
    result = invoke("bench", *TINY, "--mode", "train", "--peers", "timm", "--json", str(tmp_path / "r.json"))
    assert result.exit_code == 0, result.output
    report = check_model_report(tmp_path / "r.json", ["train"], ["vitkit", "timm"])
    assert [row["status"] for row in report["rows"]] == ["ok", "ok"]
    assert report["baselines"] == {"train": "timm"}


@pytest.mark.slow
def test_bench_both_modes_against_timm(tmp_path, inprocess_workers):
    result = invoke("bench", *TINY, "--mode", "both", "--peers", "timm", "--attention", "sdpa,math",
                    "--json", str(tmp_path / "r.json"), "--plot", str(tmp_path / "r.png"))
    assert result.exit_code == 0, result.output
    report = check_model_report(tmp_path / "r.json", ["infer", "train"], ["vitkit:sdpa", "vitkit:math", "timm"])
    assert all(row["status"] == "ok" for row in report["rows"])
    assert report["baselines"] == {"infer": "timm", "train": "timm"}
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"


def test_what_cannot_run_is_skipped_without_starting_a_process(tmp_path, monkeypatch):
    from vitkit.bench import runner

    monkeypatch.setattr(runner, "run_worker", lambda spec: pytest.fail(f"started a worker for {spec.candidate}"))
    digits = ("--model", "vit_digits", *TINY[4:])  # fixed sin-cos positions: no transformers model holds them
    result = invoke("bench", *digits, "--mode", "train", "--attention", "flash,flex", "--peers",
                    "hf,vit-pytorch-flash", "--json", str(tmp_path / "r.json"))
    assert result.exit_code == 0, result.output
    report = check_model_report(tmp_path / "r.json", ["train"], ["vitkit:flash", "vitkit:flex", "hf",
                                                                  "vit-pytorch-flash"])
    assert {row["status"] for row in report["rows"]} == {"skipped"}
    assert report["baselines"] == {"train": None}
    assert "vitkit:flex: attention backend 'flex' has no backward pass on cpu" in result.stdout


@pytest.mark.parametrize(("args", "message"), [
    (("--batch-size", "0"), "error: batch_size must be an integer >= 1, got 0"),
    (("--mode", "fly"), "error: mode must be one of infer, train, both, got 'fly'"),
    (("--peers", "keras"),
     "error: unknown peer 'keras'; choose from: timm, vit-pytorch, vit-pytorch-flash, hf, onnxruntime"),
    (("--attention", "warp"), "error: unknown attention backend 'warp'"),
    (("--precision", "fp8"), "error: --precision must be auto or one of fp32, bf16, fp16, bf16-autocast, "
                              "fp16-autocast, int8, got 'fp8'"),
    (("--compile", "--warmup", "0"), "error: compile needs warmup >= 1"),
    (("--grad-checkpointing", "13"), "error: grad_checkpointing must be at most the model's depth (12)"),
    (("--model", "resnet50"), "error: unknown model 'resnet50'"),
    (("--device", "tpu"), "error: device must be 'auto', 'cpu' or 'cuda[:N]', got 'tpu'"),
], ids=lambda value: value[0] if isinstance(value, tuple) else None)
def test_bad_options_are_one_line_errors(args, message):
    result = invoke("bench", *args)
    assert result.exit_code == 1
    assert result.stderr.startswith(message), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_rounds_take_turns_and_pool_the_steps(tmp_path, inprocess_workers, monkeypatch):
    order = []
    real = runner.run_worker
    monkeypatch.setattr(runner, "run_worker", lambda spec: order.append(spec.candidate) or real(spec))
    result = invoke("bench", *TINY, "--mode", "infer", "--peers", "timm", "--rounds", "2", "--json",
                    str(tmp_path / "r.json"))
    assert result.exit_code == 0, result.output
    assert order == ["vitkit", "timm", "vitkit", "timm"]  # in turn, so a load change hits both alike
    report = check_model_report(tmp_path / "r.json", ["infer"], ["vitkit", "timm"])
    assert report["settings"]["rounds"] == 2


def test_merge_rounds_pools_steps_and_keeps_a_failure():
    ok = {"status": "ok", "step_s": [1.0, 2.0], "peak_mem_mb": 10.0, "tensor_mem_mb": None,
          "ceiling_gflops_per_s": 5.0, "flops_counted": 3}
    later = dict(ok, step_s=[3.0], peak_mem_mb=12.0, ceiling_gflops_per_s=7.0)
    failed = {"status": "failed", "reason": "boom"}
    merged = runner.merge_rounds([{"library": "x", "params": 1, "modes": {"infer": ok, "train": ok}},
                                  {"library": "x", "params": 1, "modes": {"infer": later, "train": failed}}])
    assert merged["modes"]["infer"]["step_s"] == [1.0, 2.0, 3.0]
    assert merged["modes"]["infer"]["peak_mem_mb"] == 12.0 and merged["modes"]["infer"]["tensor_mem_mb"] is None
    assert merged["modes"]["infer"]["ceiling_gflops_per_s"] == 6.0
    assert merged["modes"]["train"] == failed


def test_settings_resolve_all_none_and_aliases():
    settings = ModelBenchSettings(attention=("all",), peers=("none",))
    assert "flex" in settings.attention and "sdpa:math" in settings.attention and settings.peers == ()
    assert ModelBenchSettings(attention=("flash_attention", "flash")).attention == ("flash",)
    assert ModelBenchSettings().peers == tuple(PEERS)
    assert ModelBenchSettings(mode="both").modes == ("infer", "train")


# --- tables on a narrow or piped output ----------------------------------------------------------

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
NARROW = {**ENV, "COLUMNS": "80"}  # a log or a pipe: CliRunner's output is no terminal


def whole_cells(table) -> list[str]:
    """The text of every header and cell of the columns that must not wrap (names, numbers)."""
    return [cell.plain if isinstance(cell, Text) else str(cell) for column in table.columns if column.no_wrap
            for cell in (column.header, *column.cells)]


@pytest.mark.parametrize(("report", "table"), [
    ("cpu/vit_small_patch16_224_infer.json", model_table), ("cpu/attention.json", attention_table),
    ("cpu/memory.json", memory_table), ("packing/packing_24_infer.json", packing_table),
    ("tower/tower.json", tower_table)], ids=lambda value: getattr(value, "__name__", None))
@pytest.mark.parametrize("width", [80, 50])
def test_a_table_wider_than_the_output_is_printed_in_parts_that_cut_no_number(report, table, width):
    built = table(json.loads((RESULTS / report).read_text()))
    out = Console(file=io.StringIO(), width=width, highlight=False)
    print_table(built, out=out)
    text = out.file.getvalue()
    assert "…" not in text
    lines = text.splitlines()
    assert all(cell in text for cell in whole_cells(built))
    assert all(len(line) <= width for line in lines if line.startswith(("┃", "│", "┏", "└")))
    parts = [line for line in lines if line.startswith("┃")]  # the header row of each part names the row again
    assert all(line.split("┃")[1].strip() == built.columns[0].header for line in parts)


def test_bench_tables_at_80_columns_cut_no_number(tmp_path, inprocess_workers):
    model = CliRunner().invoke(app, ["bench", *TINY, "--peers", "none", "--json", str(tmp_path / "m.json")],
                               env=NARROW)
    assert model.exit_code == 0, model.output
    [row] = json.loads((tmp_path / "m.json").read_text())["rows"]
    assert "…" not in model.stdout
    assert {f"{row['img_per_s']:,.1f}", f"{row['ms_per_step']:,.1f}", f"{row['peak_mem_mb']:,.0f}"} <= set(
        model.stdout.split())
    attention = CliRunner().invoke(app, ["bench", "attention", "--tokens", "16", "--heads", "2", "--head-dim", "8",
                                         "--backends", "math,sdpa", "--steps", "1", "--warmup", "0", "--threads", "1",
                                         "--json", str(tmp_path / "a.json")], env=NARROW)
    assert attention.exit_code == 0, attention.output
    assert "…" not in attention.stdout
    assert {f"{r['ms']:,.2f}" for r in json.loads((tmp_path / "a.json").read_text())["rows"]} <= set(
        attention.stdout.split())


# --- vitkit bench attention / memory --------------------------------------------------------------


def test_bench_attention_times_each_backend_and_skips_what_cannot_run(tmp_path):
    result = invoke("bench", "attention", "--tokens", "16,64", "--heads", "2", "--head-dim", "8", "--backends",
                    "math,sdpa,flash", "--steps", "2", "--warmup", "1", "--threads", "1",
                    "--json", str(tmp_path / "a.json"), "--plot", str(tmp_path / "a.png"))
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "a.json").read_text())
    rows = {(r["backend"], r["tokens"], r["pass"]): r for r in report["rows"]}
    assert len(rows) == 3 * 2 * 2
    for backend in ("math", "sdpa"):
        for key in [(backend, n, p) for n in (16, 64) for p in ("fwd", "fwd+bwd")]:
            row = rows[key]
            assert row["status"] == "ok" and row["ms"] > 0 and row["gflops_per_s"] > 0 and row["peak_mem_mb"] > 0
    assert rows[("math", 64, "fwd")]["peak_mem_mb"] > rows[("sdpa", 64, "fwd")]["peak_mem_mb"]
    assert {rows[("flash", n, p)]["status"] for n in (16, 64) for p in ("fwd", "fwd+bwd")} == {"skipped"}
    assert "flash: needs a cuda device" in result.stdout
    assert (tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG"


def test_bench_attention_rejects_bad_tokens_and_auto():
    assert invoke("bench", "attention", "--tokens", "1,x").stderr.startswith(
        "error: --tokens takes comma-separated integers")
    assert invoke("bench", "attention", "--backends", "auto").stderr.startswith("error: backends takes kernel names")
    with pytest.raises(ValueError, match="head_dim must be an integer >= 1"):
        AttentionBenchSettings(head_dim=0)


@pytest.mark.slow
def test_bench_memory_trains_once_per_level(tmp_path, inprocess_workers):
    # Batch 64, so that activations outweigh the weights and optimizer state of this tiny model.
    result = invoke("bench", "memory", *TINY, "--batch-size", "64", "--levels", "0,4",
                    "--json", str(tmp_path / "m.json"), "--plot", str(tmp_path / "m.png"))
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "m.json").read_text())
    assert [row["recomputed"] for row in report["rows"]] == [0, 4]
    for row in report["rows"]:
        assert row["status"] == "ok", row
        assert row["peak_mem_mb"] > 0 and row["tensor_mem_mb"] > 0 and row["ms_per_step"] > 0
    first, full = report["rows"]
    assert first["mem_vs_none"] == first["time_vs_none"] == 1.0
    assert full["mem_vs_none"] < 1.0  # tensor memory is exact: recomputing every block must save some
    assert (tmp_path / "m.png").read_bytes()[:4] == b"\x89PNG"


def test_bench_memory_rejects_levels_it_cannot_run():
    simple = MemoryBenchSettings(model="simple_vit_small_patch16_224")  # SimpleViT recomputes blocks too
    assert simple.levels == tuple(range(13))
    levels = invoke("bench", "memory", "--model", "vit_digits", "--levels", "0,9")
    assert levels.stderr.startswith("error: levels must be block counts from 0 to 4")


def test_parse_ints_takes_lists_and_ranges():
    assert parse_ints("0-3,6", "--levels") == (0, 1, 2, 3, 6)
    assert parse_ints(" 197, 577 ", "--tokens") == (197, 577)
    with pytest.raises(ValueError, match="--levels takes comma-separated integers"):
        parse_ints("a-b", "--levels")

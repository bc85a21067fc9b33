"""Benchmarks: vitkit against its peers on the same inputs, attention kernels, and gradient checkpointing.

`run_model_bench` runs each candidate in its own process (`python -m vitkit.bench.worker`, whose
`run_candidate` is the same thing in-process);
`run_attention_bench` times the kernels in this one; `run_memory_bench` trains once per number of
recomputed blocks. Tables live in `vitkit.bench.report`, charts in `vitkit.bench.plots`.
"""

from .attention_bench import AttentionBenchSettings, run_attention_bench
from .candidates import PEERS, Unsupported
from .ceiling import Ceiling, measure_ceiling
from .flops import Gemm, analytic_flops, block_gemms, counted_flops
from .memory_bench import MemoryBenchSettings, run_memory_bench
from .runner import ModelBenchReport, ModelBenchSettings, Row, run_model_bench
from .spec import CandidateSpec

__all__ = [
    "PEERS",
    "AttentionBenchSettings",
    "CandidateSpec",
    "Ceiling",
    "Gemm",
    "MemoryBenchSettings",
    "ModelBenchReport",
    "ModelBenchSettings",
    "Row",
    "Unsupported",
    "analytic_flops",
    "block_gemms",
    "counted_flops",
    "measure_ceiling",
    "run_attention_bench",
    "run_memory_bench",
    "run_model_bench",
]

"""Names and defaults the command line's options offer, as plain data: importable without torch, so that
`vitkit --help` stays fast. The modules that implement each one take it from here."""

from __future__ import annotations

EXPORT_FORMATS = ("vitkit", "timm", "hf", "hf-siglip", "hf-vit")  # layouts `convert_checkpoint` writes
DEFAULT_OPSET = 20  # ONNX opset of `export_onnx`: GELU as one op; 23 also turns attention into ONNX `Attention`
# Attention kernels an exporter can trace into portable operators ('auto' asks for sdpa); flash / xformers / flex
# are custom kernels.
EXPORT_BACKENDS = ("sdpa", "math")
BENCH_ATTENTION_BACKENDS = ("math", "sdpa", "flash", "xformers", "flex")  # kernels `vitkit bench attention` times
# What a feature row can be pooled by: a model's `global_pool` choices, with 'none' (every token) for ''.
FEATURE_POOLS = ("token", "avg", "max", "avgmax", "map", "none")
EMBED_DTYPES = {"fp32": "float32", "fp16": "float16"}  # stored embedding rows: name -> torch dtype

"""Training, evaluation and prediction around vitkit models."""

from .evaluate import EvalResult, evaluate, predict
from .loop import Reporter, RunSummary, train
from .options import TrainOptions
from .run_dir import RunDir

__all__ = ["EvalResult", "Reporter", "RunDir", "RunSummary", "TrainOptions", "evaluate", "predict", "train"]

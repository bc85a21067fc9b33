"""A tower as a feature extractor: `embed` rows of images (in memory or as sharded files), `load_embeddings`, and
kNN / linear-probe evaluation of the rows."""

from .classify import Scores, encode_labels, knn, probe
from .features import POOLS, FeatureSpec, features
from .run import embed
from .store import EmbeddingIndex, load_embeddings

__all__ = [
    "POOLS",
    "EmbeddingIndex",
    "FeatureSpec",
    "Scores",
    "embed",
    "encode_labels",
    "features",
    "knn",
    "load_embeddings",
    "probe",
]

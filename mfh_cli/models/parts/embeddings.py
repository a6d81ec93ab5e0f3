"""The input layer: one embedding per categorical field, concatenated with the dense features.

All fields share one table (field f's rows start at offset f), so a batch is one lookup. Index 0 of each field
is its out-of-vocabulary / missing row, learned like any other. Shape letters: B rows, C fields, D dense
features, M embedding width.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class FeatureEmbedding(nn.Module):
    """[B, C] int64 ids + [B, D] floats → [B, C·M + D]; `output_dim` says the width."""

    def __init__(self, vocabulary_sizes: list[int], dense_width: int, embedding_dim: int):
        super().__init__()
        offsets = torch.tensor([0, *vocabulary_sizes[:-1]], dtype=torch.int64).cumsum(0) if vocabulary_sizes \
            else torch.zeros(0, dtype=torch.int64)
        self.register_buffer("offsets", offsets, persistent=False)
        self.table = nn.Parameter(torch.empty(sum(vocabulary_sizes), embedding_dim))
        # TensorFlow's embedding_column default [ours: the authors' embedding code is not published].
        nn.init.trunc_normal_(self.table, std=1.0 / math.sqrt(embedding_dim), a=-2.0 / math.sqrt(embedding_dim),
                              b=2.0 / math.sqrt(embedding_dim))
        self.output_dim = len(vocabulary_sizes) * embedding_dim + dense_width

    def forward(self, categorical: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        rows = categorical.shape[0]
        embedded = F.embedding(categorical + self.offsets, self.table).view(rows, -1)  # [B, C·M]
        return torch.cat([embedded, dense], dim=1) if dense.shape[1] else embedded

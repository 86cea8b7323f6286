"""Sparse user rows as torch tensors, and the first layer that multiplies them without a dense users x items input."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class CSRBatch:
    """Rows of a users x items matrix as flat torch tensors (embedding_bag layout)."""

    indices: torch.Tensor  # int64 (nnz,): item of each non-zero
    offsets: torch.Tensor  # int64 (n_rows,): start of each row in `indices`
    values: torch.Tensor  # float32 (nnz,)
    rows: torch.Tensor  # int64 (nnz,): row of each non-zero
    n_rows: int

    @classmethod
    def from_scipy(cls, X: sp.spmatrix, device: torch.device | str = "cpu") -> CSRBatch:
        """A batch holding every row of `X`."""
        X = sp.csr_matrix(X)
        indptr = torch.from_numpy(X.indptr.astype(np.int64))
        counts = indptr[1:] - indptr[:-1]
        return cls(
            indices=torch.from_numpy(X.indices.astype(np.int64)).to(device),
            offsets=indptr[:-1].to(device),
            values=torch.from_numpy(X.data.astype(np.float32)).to(device),
            rows=torch.repeat_interleave(torch.arange(X.shape[0]), counts).to(device),
            n_rows=X.shape[0],
        )

    def to_dense(self, n_items: int) -> torch.Tensor:
        """(n_rows, n_items) dense copy (tests and small batches only)."""
        out = torch.zeros(self.n_rows, n_items, device=self.values.device)
        out.index_put_((self.rows, self.indices), self.values, accumulate=True)
        return out


class SparseRows:
    """A whole CSR matrix kept as tensors on one device, from which row batches are gathered without scipy."""

    def __init__(self, X: sp.spmatrix, device: torch.device | str = "cpu") -> None:
        X = sp.csr_matrix(X)
        self.shape = X.shape
        self.indptr = torch.from_numpy(X.indptr.astype(np.int64)).to(device)
        self.indices = torch.from_numpy(X.indices.astype(np.int64)).to(device)
        self.values = torch.from_numpy(X.data.astype(np.float32)).to(device)

    def batch(self, row_ids: torch.Tensor) -> CSRBatch:
        """The rows `row_ids` (int64 tensor on the same device), in that order."""
        starts = self.indptr[row_ids]
        counts = self.indptr[row_ids + 1] - starts
        offsets = torch.cumsum(counts, 0) - counts
        nnz = int(counts.sum())
        local = torch.arange(row_ids.shape[0], device=row_ids.device)
        rows = torch.repeat_interleave(local, counts, output_size=nnz)
        # position of each non-zero in the full matrix: its row's start plus its rank inside the row
        pos = starts[rows] + torch.arange(nnz, device=row_ids.device) - offsets[rows]
        return CSRBatch(self.indices[pos], offsets, self.values[pos], rows, int(row_ids.shape[0]))


def normalized_dropout(x: CSRBatch, p: float, training: bool) -> torch.Tensor:
    """Values of the L2-normalized rows after (inverted) dropout, computed over the non-zeros only."""
    sq = torch.zeros(x.n_rows, device=x.values.device, dtype=x.values.dtype).index_add_(0, x.rows, x.values * x.values)
    norm = sq.sqrt().clamp_min(1e-12)  # as F.normalize / tf.nn.l2_normalize
    values = x.values / norm[x.rows]
    return F.dropout(values, p=p, training=training)


def _bag_starts(keys: torch.Tensor, n_bags: int) -> torch.Tensor:
    """embedding_bag offsets for entries ordered by `keys` (in 0..n_bags-1): where each key's bag starts."""
    counts = torch.bincount(keys, minlength=n_bags)
    return counts.cumsum(0) - counts


class _SparseMatmul(torch.autograd.Function):
    """`x @ weight` for the non-zeros of a CSR batch on the CPU, with a cheaper weight gradient than embedding_bag's
    own dense backward: x^T @ grad, itself an embedding_bag over grad's rows with the non-zeros grouped by item
    (a radix sort). bench/train_speed.py measures both backwards."""

    @staticmethod
    def forward(ctx: Any, weight: torch.Tensor, indices: torch.Tensor, offsets: torch.Tensor, rows: torch.Tensor,
                values: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(indices, rows, values)
        ctx.n_in = weight.shape[0]
        return F.embedding_bag(indices, weight, offsets, mode="sum", per_sample_weights=values)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        indices, rows, values = ctx.saved_tensors
        n_in = ctx.n_in
        if n_in <= 1 << 16:  # numpy's stable sort of 16-bit keys is a radix sort, linear in the non-zeros
            order = torch.from_numpy(np.argsort(indices.numpy().astype(np.uint16), kind="stable"))
        else:
            order = torch.argsort(indices, stable=True)
        grad_weight = F.embedding_bag(rows[order], grad.to(values.dtype), _bag_starts(indices, n_in), mode="sum",
                                      per_sample_weights=values[order])
        return grad_weight, None, None, None, None


@torch.compiler.disable  # eager under train.compile: dynamo would split the graph around the sparse ops anyway
def _sparse_matmul_nonzero(weight: torch.Tensor, x: CSRBatch, values: torch.Tensor) -> torch.Tensor:
    """`x @ weight` over the entries whose value is non-zero (dropout zeroes add nothing to sum or gradient)."""
    keep = values != 0
    rows = x.rows[keep]
    out: torch.Tensor = _SparseMatmul.apply(weight, x.indices[keep], _bag_starts(rows, x.n_rows), rows, values[keep])
    return out


class SparseLinear(nn.Module):
    """`x @ weight + bias` for a CSR batch `x`, via embedding_bag (no dense users x items input)."""

    # False: embedding_bag's own (dense) backward in training too; bench/train_speed.py measures both
    sparse_backward: bool = True

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        # stored (in, out) so that a row of the weight is an item's embedding
        self.weight = nn.Parameter(torch.empty(in_features, out_features))
        self.bias = nn.Parameter(torch.empty(out_features))

    def forward(self, x: CSRBatch, values: torch.Tensor) -> torch.Tensor:
        """The layer's output for the rows of `x` whose non-zeros now hold `values` (normalized, dropped out)."""
        if (self.sparse_backward and self.weight.requires_grad and torch.is_grad_enabled()
                and self.weight.device.type == "cpu" and not values.requires_grad):
            out = _sparse_matmul_nonzero(self.weight, x, values)
        else:
            out = F.embedding_bag(x.indices, self.weight, x.offsets, mode="sum", per_sample_weights=values)
        return out + self.bias

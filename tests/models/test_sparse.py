"""The sparse input: row batches gathered on the device and the first layer that multiplies them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from vae_helpers import N_ITEMS, random_csr

from recvae.models.sparse import CSRBatch, SparseLinear, SparseRows, normalized_dropout
from recvae.models.vae import MultVAE


def test_sparse_rows_gather_equals_scipy_rows(rng) -> None:
    X = random_csr(rng, 20)
    ids = torch.tensor([7, 0, 19, 7, 3])
    got = SparseRows(X).batch(ids).to_dense(N_ITEMS)
    assert torch.equal(got, torch.from_numpy(X[ids.numpy()].toarray()))


def test_sparse_first_layer_equals_dense_computation(rng) -> None:
    X = random_csr(rng, 9)
    X.data[:] = rng.random(X.nnz).astype(np.float32) + 0.5  # non-binary values exercise the normalization
    model = MultVAE(N_ITEMS, hidden_dims=(20,), latent_dim=8).eval()
    dense = torch.from_numpy(X.toarray())
    expected = F.normalize(dense, dim=1) @ model.input_layer.weight + model.input_layer.bias
    x = CSRBatch.from_scipy(X)
    got = model.input_layer(x, normalized_dropout(x, model.dropout, training=False))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    # with dropout: the sparse result equals the dense product of the same dropped-out input
    torch.manual_seed(3)
    values = normalized_dropout(x, 0.5, training=True)
    dropped = torch.zeros_like(dense).index_put_((x.rows, x.indices), values)
    kept = values != 0
    assert 0 < kept.sum() < x.values.numel()
    norm = F.normalize(dense, dim=1)[x.rows, x.indices]
    torch.testing.assert_close(values[kept], 2.0 * norm[kept])  # inverted dropout scaling 1 / (1 - p)
    layer = model.input_layer
    torch.testing.assert_close(layer(x, values), dropped @ layer.weight + layer.bias)


@pytest.mark.parametrize("n_items", [N_ITEMS, 70_000])  # 70,000 > 2^16: the torch.argsort path of the backward
def test_sparse_first_layer_gradient_equals_dense_gradient(rng, n_items: int) -> None:
    X = random_csr(rng, 9, n_items=n_items, density=0.2 if n_items == N_ITEMS else 0.001)
    x = CSRBatch.from_scipy(X)
    torch.manual_seed(4)
    values = normalized_dropout(x, 0.5, training=True)
    assert (values == 0).any()  # entries dropped out: left out of the sparse product and of its gradient
    dropped = torch.zeros(9, n_items).index_put_((x.rows, x.indices), values)
    grad_out = torch.randn(9, 5)
    grads = []
    for sparse_backward in (True, False):
        layer = SparseLinear(n_items, 5)
        layer.sparse_backward = sparse_backward
        torch.nn.init.normal_(layer.weight, generator=torch.Generator().manual_seed(5))
        torch.nn.init.zeros_(layer.bias)
        out = layer(x, values)
        torch.testing.assert_close(out, dropped @ layer.weight.detach())
        out.backward(grad_out)
        grads.append(layer.weight.grad)
    expected = dropped.T @ grad_out
    torch.testing.assert_close(grads[0], expected, rtol=1e-5, atol=1e-6)  # x^T @ grad (the training path)
    torch.testing.assert_close(grads[1], expected, rtol=1e-5, atol=1e-6)  # embedding_bag's own backward
    untouched = torch.ones(n_items, dtype=torch.bool)
    untouched[x.indices[values != 0]] = False
    assert (grads[0][untouched] == 0).all()


def test_sparse_input_has_no_dense_gradient_path(rng) -> None:
    """Rows never present in a batch get no gradient: the first layer is a gather, not a dense product."""
    x = CSRBatch.from_scipy(random_csr(rng, 4, density=0.05))
    model = MultVAE(N_ITEMS, hidden_dims=(8,), latent_dim=2)
    model.loss(x, beta=0.2).loss.backward()
    used = torch.zeros(N_ITEMS, dtype=torch.bool)
    used[x.indices] = True
    g = model.input_layer.weight.grad
    assert (g[~used] == 0).all() and (g[used] != 0).any()

"""recvae.models on CUDA: the sparse first layer and autocast give the CPU's results."""

from __future__ import annotations

import pytest
import scipy.sparse as sp
import torch

from recvae.config import ModelConfig
from recvae.models.amp import amp_dtype_for, autocast
from recvae.models.neural import build_module
from recvae.models.sparse import CSRBatch, SparseLinear, SparseRows, normalized_dropout

pytestmark = pytest.mark.cuda
CUDA = torch.device("cuda")


def _layer_pair(n_in: int, n_out: int) -> tuple[SparseLinear, SparseLinear]:
    torch.manual_seed(0)
    cpu = SparseLinear(n_in, n_out)
    torch.nn.init.normal_(cpu.weight, std=0.1)
    torch.nn.init.normal_(cpu.bias, std=0.1)
    gpu = SparseLinear(n_in, n_out).to(CUDA)
    gpu.load_state_dict(cpu.state_dict())
    return cpu, gpu


def test_sparse_linear_forward_and_backward_match_the_cpu(interactions: sp.csr_matrix) -> None:
    cpu, gpu = _layer_pair(interactions.shape[1], 16)
    grads = []
    for layer, device in ((cpu, "cpu"), (gpu, CUDA)):
        x = CSRBatch.from_scipy(interactions, device)
        values = normalized_dropout(x, 0.0, training=False)
        out = layer(x, values)
        (out * torch.arange(16, device=out.device)).sum().backward()
        assert layer.weight.grad is not None and layer.bias.grad is not None
        grads.append((out.detach().cpu(), layer.weight.grad.cpu(), layer.bias.grad.cpu()))
    for cpu_t, gpu_t in zip(*grads, strict=True):
        torch.testing.assert_close(gpu_t, cpu_t, rtol=1e-4, atol=1e-5)


def test_sparse_rows_gather_the_same_batch_on_cuda(interactions: sp.csr_matrix) -> None:
    ids = torch.tensor([5, 0, 299, 17])
    cpu = SparseRows(interactions).batch(ids)
    gpu = SparseRows(interactions, CUDA).batch(ids.to(CUDA))
    assert gpu.values.is_cuda
    torch.testing.assert_close(gpu.to_dense(120).cpu(), cpu.to_dense(120))


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_autocast_logits_stay_close_to_fp32(interactions: sp.csr_matrix, amp: str) -> None:
    torch.manual_seed(0)
    module = build_module(interactions.shape[1], ModelConfig(hidden_dims=(64,), latent_dim=16)).to(CUDA).eval()
    x = CSRBatch.from_scipy(interactions, CUDA)
    dtype = amp_dtype_for(amp, CUDA)
    assert dtype == (torch.bfloat16 if amp == "bf16" else torch.float16)
    with torch.no_grad():
        full = module.predict(x).float()
        with autocast(CUDA, dtype):
            mixed = module.predict(x)
    assert mixed.dtype == dtype
    torch.testing.assert_close(mixed.float(), full, rtol=0.05, atol=0.05)
    # the same ranking, up to near-ties: the top item of fp32 is within the top 3 of the mixed logits
    top3 = mixed.float().topk(3, dim=1).indices
    assert (top3 == full.argmax(dim=1, keepdim=True)).any(dim=1).float().mean() > 0.95

"""Mult-VAE and Mult-DAE (Liang et al. 2018) with a sparse first layer, and their `Recommender` wrapper."""

from __future__ import annotations

import dataclasses
import logging
import math
import pickle
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from recvae.config import RECOMMENDER_KINDS, Config, ModelConfig, TrainConfig, from_dict
from recvae.digest import sha256_file
from recvae.models.base import ModelLoadError, Recommender

if TYPE_CHECKING:
    from recvae.training.loop import TrainResult

logger = logging.getLogger(__name__)

STATE_FILE = "model.pt"
DIGEST_FILE = "model.pt.sha256"
ACTIVATIONS = {"tanh": torch.tanh, "relu": F.relu, "sigmoid": torch.sigmoid, "elu": F.elu, "selu": F.selu, "swish": F.silu}
KINDS = RECOMMENDER_KINDS


# --------------------------------------------------------------------------------------------- sparse input


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
    """`x @ weight` for the non-zeros of a CSR batch on the CPU, with a faster weight gradient than embedding_bag's
    own dense backward: x^T @ grad, itself an embedding_bag over grad's rows with the non-zeros grouped by item
    (a radix sort). ~1.1x faster epochs here (bench/results/train_speed.md)."""

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
        if n_in <= 1 << 16:  # numpy's stable sort of 16-bit keys is a radix sort: ~10x torch.sort here
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
    return _SparseMatmul.apply(weight, x.indices[keep], _bag_starts(rows, x.n_rows), rows, values[keep])


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
        if (self.sparse_backward and self.weight.requires_grad and torch.is_grad_enabled()
                and self.weight.device.type == "cpu" and not values.requires_grad):
            out = _sparse_matmul_nonzero(self.weight, x, values)
        else:
            out = F.embedding_bag(x.indices, self.weight, x.offsets, mode="sum", per_sample_weights=values)
        return out + self.bias


def amp_dtype_for(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `train.amp` on `device`: bf16 on CPU or CUDA, fp16 on CUDA only, else None."""
    if amp == "none":
        return None
    if device.type != "cuda" and amp == "fp16":
        logger.warning("train.amp=fp16 is ignored on the CPU (use bf16 there)")
        return None
    return torch.bfloat16 if amp == "bf16" else torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager[Any]:
    """Mixed precision for the matrix products (weights and the likelihood stay float32), or nothing."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


# ------------------------------------------------------------------------------------------------- models


class Loss(NamedTuple):
    """The objective of one batch and its parts (per-user averages)."""

    loss: torch.Tensor
    neg_ll: torch.Tensor
    kl: torch.Tensor


def multinomial_nll(logits: torch.Tensor, x: CSRBatch) -> torch.Tensor:
    """-sum_i x_ui log softmax(logits_u)_i averaged over users, gathered at the non-zeros only."""
    # one fused kernel each way (float32 inside, bfloat16 logits in and their gradient out): ~1.8x faster than
    # logsumexp plus a gather on a float32 copy of the logits, ~10% of a bf16 epoch (bench/results/train_speed.md)
    log_pi = torch.log_softmax(logits, dim=1, dtype=torch.float32)
    ll = torch.sum(x.values * log_pi[x.rows, x.indices])
    return -ll / max(x.n_rows, 1)


def _store_args(module: nn.Module, n_items: int, hidden_dims: Any, latent_dim: int, activation: str,
                dropout: float, latent_activation: bool = False) -> None:
    """Check and keep the constructor arguments that `model_args` returns (shared by MultVAE and RecVAE)."""
    if n_items < 1:
        raise ValueError(f"n_items must be >= 1; got {n_items}")
    module.n_items = int(n_items)
    module.hidden_dims = tuple(int(h) for h in hidden_dims)
    module.latent_dim = int(latent_dim)
    module.activation = activation
    module.dropout = float(dropout)
    module.latent_activation = bool(latent_activation)


class MultVAE(nn.Module):
    """Mult-VAE^PR: encoder [I-600-200] tanh to a Gaussian q(z|x), decoder [200-600-I], multinomial likelihood.

    Training maximises E_q[log p(x|z)] - beta * KL(q(z|x) || N(0, I)) with a reparameterized sample of z;
    at inference z is the mean of q. The input row is L2-normalized and dropped out (rate `dropout`).
    With `latent_activation` (not in the paper) the decoder reads activation(z), as the Mult-DAE's reads its code.
    """

    variational = True
    nll = staticmethod(multinomial_nll)  # an attribute, so that training can swap in a compiled one

    def __init__(
        self,
        n_items: int,
        hidden_dims: tuple[int, ...] | list[int] = (600,),
        latent_dim: int = 200,
        activation: str = "tanh",
        dropout: float = 0.5,
        latent_activation: bool = False,
    ) -> None:
        super().__init__()
        _store_args(self, n_items, hidden_dims, latent_dim, activation, dropout, latent_activation)
        self.act = ACTIVATIONS[activation]
        q_dims = [self.n_items, *self.hidden_dims, self.latent_dim]
        p_dims = q_dims[::-1]
        # the last encoder layer outputs the mean and the log-variance side by side
        q_out = [*q_dims[1:-1], self.latent_dim * (2 if self.variational else 1)]
        self.input_layer = SparseLinear(q_dims[0], q_out[0])
        self.encoder = nn.ModuleList(nn.Linear(a, b) for a, b in zip(q_out[:-1], q_out[1:]))
        self.decoder = nn.ModuleList(nn.Linear(a, b) for a, b in zip(p_dims[:-1], p_dims[1:]))
        self.reset_parameters()

    def model_args(self) -> dict[str, Any]:
        """Constructor arguments (plain types): enough to rebuild the module before loading its weights."""
        return {
            "n_items": self.n_items,
            "hidden_dims": list(self.hidden_dims),
            "latent_dim": self.latent_dim,
            "activation": self.activation,
            "dropout": self.dropout,
            "latent_activation": self.latent_activation,
        }

    @property
    def kind(self) -> str:
        return "vae" if self.variational else "dae"

    def reset_parameters(self) -> None:
        """Xavier weights and biases from N(0, 0.001^2) truncated at 2 sd, as the reference notebook."""
        for layer in [self.input_layer, *self.encoder, *self.decoder]:
            nn.init.xavier_uniform_(layer.weight)
            nn.init.trunc_normal_(layer.bias, std=0.001, a=-0.002, b=0.002)

    def weights(self) -> list[torch.Tensor]:
        """Weight matrices (not biases): what the reference's L2 term `lam` penalises."""
        return [layer.weight for layer in [self.input_layer, *self.encoder, *self.decoder]]

    def encode(self, x: CSRBatch) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(mean, log-variance) of q(z|x); the log-variance is None for the DAE."""
        h = self.input_layer(x, normalized_dropout(x, self.dropout, self.training))
        for layer in self.encoder:
            h = layer(self.act(h))
        if not self.variational:
            return self.act(h), None  # the DAE applies the activation to its code too
        return h[:, : self.latent_dim], h[:, self.latent_dim :]

    def sample(self, mu: torch.Tensor, logvar: torch.Tensor | None) -> torch.Tensor:
        """z = mu + eps * sigma in training (reparameterization), the mean at inference."""
        if logvar is None or not self.training:
            return mu
        return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Unnormalised logits over all items; softmax of them is the multinomial pi(z)."""
        h = self.act(z) if self.latent_activation else z
        for i, layer in enumerate(self.decoder):
            h = layer(h)
            if i < len(self.decoder) - 1:
                h = self.act(h)
        return h

    def predict(self, x: CSRBatch) -> torch.Tensor:
        """Logits decoded from the mean of q(z|x) (no sampling, no KL): what scoring uses."""
        return self.decode(self.encode(x)[0])

    def forward(self, x: CSRBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, KL(q(z|x) || N(0, I)) per user) for a batch of user rows."""
        mu, logvar = self.encode(x)
        logits = self.decode(self.sample(mu, logvar))
        if logvar is None:
            kl = torch.zeros(x.n_rows, device=logits.device)
        else:
            kl = 0.5 * torch.sum(-logvar + torch.exp(logvar) + mu.pow(2) - 1.0, dim=1)
        return logits, kl

    def loss(self, x: CSRBatch, beta: float, beta_per_item: bool = False) -> Loss:
        """-(multinomial log-likelihood) + beta * KL, averaged over the users of the batch.

        With `beta_per_item` (RecVAE, Shenbin et al. 2020) a user's KL weight is beta x the user's item count,
        so the prior's pull keeps pace with the likelihood, which is a sum over the user's items.
        `Loss.kl` is the plain per-user mean KL either way.
        """
        logits, kl = self(x)
        neg_ll = self.nll(logits, x)
        kl = kl.float()
        if beta_per_item:
            counts = torch.zeros(x.n_rows, device=kl.device).index_add_(0, x.rows, x.values.float())
            penalty = beta * (kl * counts).mean()
        else:
            penalty = beta * kl.mean()
        return Loss(neg_ll + penalty, neg_ll, kl.mean())


class MultDAE(MultVAE):
    """Mult-DAE: the same network with a deterministic code and no KL term (the paper's ablation)."""

    variational = False


class DenseEncoder(nn.Module):
    """RecVAE's encoder: each layer adds the outputs of all earlier ones, then activation and layer norm."""

    def __init__(self, n_items: int, width: int, n_layers: int, latent_dim: int, activation: str) -> None:
        super().__init__()
        self.act = ACTIVATIONS[activation]
        self.input_layer = SparseLinear(n_items, width)
        self.hidden = nn.ModuleList(nn.Linear(width, width) for _ in range(n_layers - 1))
        self.norms = nn.ModuleList(nn.LayerNorm(width, eps=0.1) for _ in range(n_layers))  # RecVAE's eps
        self.head = nn.Linear(width, 2 * latent_dim)  # mean and log-variance side by side

    def forward(self, x: CSRBatch, dropout: float, training: bool) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.norms[0](self.act(self.input_layer(x, normalized_dropout(x, dropout, training))))
        total = h
        for layer, norm in zip(self.hidden, self.norms[1:]):
            h = norm(self.act(layer(h) + total))
            total = total + h
        return self.head(h).chunk(2, dim=1)


def log_normal(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Element-wise log N(z; mu, exp(logvar))."""
    return -0.5 * (logvar + math.log(2 * math.pi) + (z - mu).pow(2) / logvar.exp())


class RecVAE(nn.Module):
    """RecVAE (Shenbin et al., WSDM 2020): Mult-VAE with a densely connected encoder, a composite prior and a
    one-layer decoder, trained by alternating encoder and decoder updates (see `set_phase`).

    The prior mixes N(0, I), the posterior of the encoder as it was after the last encoder phase (`update_prior`)
    and a wide N(0, e^10 I), weighted 3/20, 3/4, 1/10; its KL term is a one-sample estimate. Scoring decodes the
    mean of q(z|x) as Mult-VAE does. `hidden_dims` are the encoder's layers (one width, RecVAE: 600 x 5).
    """

    variational = True
    alternating = True
    PRIOR_WEIGHTS = (3 / 20, 3 / 4, 1 / 10)
    WIDE_LOGVAR = 10.0

    def __init__(
        self,
        n_items: int,
        hidden_dims: tuple[int, ...] | list[int] = (600,) * 5,
        latent_dim: int = 200,
        activation: str = "swish",
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        _store_args(self, n_items, hidden_dims, latent_dim, activation, dropout)
        if not self.hidden_dims or len(set(self.hidden_dims)) != 1:
            raise ValueError(f"RecVAE's encoder layers must share one width; got {list(self.hidden_dims)}")
        args = (self.n_items, self.hidden_dims[0], len(self.hidden_dims), self.latent_dim, activation)
        self.encoder = DenseEncoder(*args)
        self.prior_encoder = DenseEncoder(*args).requires_grad_(False)
        self.decoder = nn.ModuleList([nn.Linear(self.latent_dim, self.n_items)])
        self.phase: str | None = None
        self.reset_parameters()

    model_args = MultVAE.model_args

    @property
    def kind(self) -> str:
        return "recvae"

    def reset_parameters(self) -> None:
        """Xavier weights and small biases as Mult-VAE; layer norms at identity; the prior copies the encoder."""
        for layer in [self.encoder.input_layer, *self.encoder.hidden, self.encoder.head, *self.decoder]:
            nn.init.xavier_uniform_(layer.weight)
            nn.init.trunc_normal_(layer.bias, std=0.001, a=-0.002, b=0.002)
        self.update_prior()

    def weights(self) -> list[torch.Tensor]:
        """Weight matrices (not biases or norms) of the trained networks, for an optional L2 term."""
        return [layer.weight for layer in [self.encoder.input_layer, *self.encoder.hidden, self.encoder.head, *self.decoder]]

    def set_phase(self, phase: str | None) -> None:
        """'encoder' trains the encoder only, 'decoder' the decoder only (input dropout off, as RecVAE), None both."""
        if phase not in (None, "encoder", "decoder"):
            raise ValueError(f"phase must be None, 'encoder' or 'decoder'; got {phase!r}")
        self.phase = phase
        self.encoder.requires_grad_(phase != "decoder")
        self.decoder.requires_grad_(phase != "encoder")

    def update_prior(self) -> None:
        """The prior's posterior component takes the encoder's current weights."""
        self.prior_encoder.load_state_dict(self.encoder.state_dict())

    def encode(self, x: CSRBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, log-variance) of q(z|x)."""
        dropout = 0.0 if self.phase == "decoder" else self.dropout
        return self.encoder(x, dropout, self.training)

    sample = MultVAE.sample
    loss = MultVAE.loss
    nll = staticmethod(multinomial_nll)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Unnormalised logits over all items."""
        return self.decoder[0](z)

    def predict(self, x: CSRBatch) -> torch.Tensor:
        """Logits decoded from the mean of q(z|x): what scoring uses."""
        return self.decode(self.encode(x)[0])

    def log_prior(self, x: CSRBatch, z: torch.Tensor) -> torch.Tensor:
        """Element-wise log density of the composite prior at z."""
        with torch.no_grad():
            post_mu, post_logvar = self.prior_encoder(x, 0.0, False)
        zeros = torch.zeros_like(z)
        parts = [
            log_normal(z, zeros, zeros),
            log_normal(z, post_mu.to(z.dtype), post_logvar.to(z.dtype)),
            log_normal(z, zeros, torch.full_like(z, self.WIDE_LOGVAR)),
        ]
        weighted = [p + math.log(w) for p, w in zip(parts, self.PRIOR_WEIGHTS)]
        return torch.logsumexp(torch.stack(weighted, dim=-1), dim=-1)

    def forward(self, x: CSRBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, one-sample estimate of KL(q(z|x) || composite prior) per user)."""
        mu, logvar = self.encode(x)
        z = self.sample(mu, logvar)
        logits = self.decode(z)
        mu, logvar, z = mu.float(), logvar.float(), z.float()
        kl = (log_normal(z, mu, logvar) - self.log_prior(x, z)).sum(dim=1)
        return logits, kl


def build_module(n_items: int, model_config: ModelConfig) -> MultVAE | RecVAE:
    """MultVAE, MultDAE or RecVAE from a validated ModelConfig."""
    model_config.validate()
    cls = {"vae": MultVAE, "dae": MultDAE, "recvae": RecVAE}[model_config.kind]
    args = (n_items, model_config.hidden_dims, model_config.latent_dim, model_config.activation, model_config.dropout)
    if model_config.kind == "recvae":
        return RecVAE(*args)
    return cls(*args, latent_activation=model_config.latent_activation)


# ------------------------------------------------------------------------------------------- recommender


def _plain(d: dict[str, Any]) -> dict[str, Any]:
    """Tuples to lists so that the dict is JSON- and weights_only-friendly and compares equal after a round trip."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


class MultVAERecommender(Recommender):
    """Mult-VAE / Mult-DAE / RecVAE behind the `Recommender` contract (kind 'multvae', 'multdae' or 'recvae')."""

    kind = "multvae"

    def __init__(
        self,
        n_items: int = 0,
        model_config: ModelConfig | None = None,
        train_config: TrainConfig | None = None,
        module: MultVAE | None = None,
    ) -> None:
        self.model_config = model_config or ModelConfig()
        self.train_config = train_config or TrainConfig()
        self.model_config.validate()
        self.train_config.validate()
        self.kind = KINDS[self.model_config.kind]
        self.n_items = int(n_items)
        self.module = module
        self.result: TrainResult | None = None
        if module is not None:
            self.n_items = module.n_items

    @property
    def device(self) -> torch.device:
        if self.module is None:
            return torch.device("cpu")
        return next(self.module.parameters()).device

    def config(self) -> Config:
        """A Config holding this model's model and train sections."""
        return Config(model=self.model_config, train=self.train_config)

    def fit(
        self,
        train: sp.csr_matrix,
        validation: tuple[sp.csr_matrix, sp.csr_matrix] | None = None,
        config: Config | None = None,
        out_dir: str | Path | None = None,
        *,
        resume: bool = False,
        on_epoch_end: Any = None,
        snapshot_id: str | None = None,
        **kwargs: Any,
    ) -> MultVAERecommender:
        """Train on `train`; with `validation=(fold_in, held_out)` the epoch with the best NDCG@100 is kept.

        `out_dir` receives best.pt / last.pt (needed for `resume`); the TrainResult is kept in `self.result`.
        """
        from recvae.training.loop import fit_model

        if kwargs:
            raise TypeError(f"unexpected argument(s) {', '.join(sorted(kwargs))}")
        if config is not None:
            self.model_config, self.train_config = config.model, config.train
            self.kind = KINDS[self.model_config.kind]
        result = fit_model(
            train,
            validation,
            self.config(),
            out_dir,
            resume=resume,
            select_on="validation" if validation is not None else None,
            on_epoch_end=on_epoch_end,
            snapshot_id=snapshot_id,
        )
        self.module = result.recommender.module
        self.n_items = result.recommender.n_items
        self.result = result
        return self

    def _require_module(self) -> MultVAE:
        if self.module is None:
            raise RuntimeError("MultVAERecommender is not fitted: call fit(train) or load a saved model first")
        return self.module

    def scores(self, X: sp.csr_matrix) -> torch.Tensor:
        """(X.shape[0], n_items) float32 logits on the CPU; the mean of q(z|x) is decoded (no sampling)."""
        return self._logits(X).float()

    def ranking_scores(self, X: sp.csr_matrix) -> torch.Tensor:
        """The logits in the precision they were computed in (bfloat16 with train.amp=bf16), a new tensor."""
        return self._logits(X)

    def _logits(self, X: sp.csr_matrix) -> torch.Tensor:
        module = self._require_module()
        if X.shape[1] != self.n_items:
            raise ValueError(f"input has {X.shape[1]} item columns; the model was trained on {self.n_items} items")
        X = sp.csr_matrix(X)
        was_training = module.training
        module.eval()
        out = []
        amp = amp_dtype_for(self.train_config.amp, self.device)  # score as the model was validated in training
        try:
            with torch.no_grad(), autocast(self.device, amp):
                for start in range(0, X.shape[0], self.train_config.eval_batch_size):
                    batch = CSRBatch.from_scipy(X[start : start + self.train_config.eval_batch_size], self.device)
                    out.append(module.predict(batch).cpu())
        finally:
            module.train(was_training)
        if len(out) == 1:
            return out[0]  # no chunk-sized copy for a single batch
        return torch.cat(out) if out else torch.zeros(0, self.n_items)

    def params(self) -> dict[str, Any]:
        """{'model': ModelConfig fields, 'train': TrainConfig fields}."""
        return {"model": _plain(dataclasses.asdict(self.model_config)), "train": _plain(dataclasses.asdict(self.train_config))}

    def _save_state(self, path: Path) -> None:
        module = self._require_module()
        state = {
            "format": 1,
            "kind": self.kind,
            "model_args": module.model_args(),
            "model_config": _plain(dataclasses.asdict(self.model_config)),
            "train_config": _plain(dataclasses.asdict(self.train_config)),
            "state_dict": {k: v.detach().cpu() for k, v in module.state_dict().items()},
        }
        torch.save(state, path / STATE_FILE)
        (path / DIGEST_FILE).write_text(sha256_file(path / STATE_FILE) + "\n")

    @classmethod
    def _load_state(cls, path: Path, meta: dict[str, Any]) -> MultVAERecommender:
        state = load_state_file(path / STATE_FILE, expected_sha256=_read_digest(path / DIGEST_FILE))
        rec = cls.from_state(state, source=path / STATE_FILE)
        if meta.get("kind") not in (None, rec.kind):
            raise ModelLoadError(f"{path}: metadata says kind {meta.get('kind')!r} but {STATE_FILE} holds {rec.kind!r}")
        if meta.get("n_items") not in (None, rec.n_items):
            raise ModelLoadError(f"{path}: metadata says {meta.get('n_items')} items but {STATE_FILE} holds {rec.n_items}")
        return rec

    @classmethod
    def from_state(cls, state: dict[str, Any], source: str | Path = "<state>") -> MultVAERecommender:
        """Rebuild from a dict holding model_args, model_config, train_config and state_dict."""
        try:
            model_config = from_dict(ModelConfig, state["model_config"])
            train_config = from_dict(TrainConfig, state["train_config"])
            args = dict(state["model_args"])
            sd = state["state_dict"]
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelLoadError(f"{source}: not a Mult-VAE state ({exc})") from exc
        expect = {"hidden_dims": list(model_config.hidden_dims), "latent_dim": model_config.latent_dim,
                  "activation": model_config.activation, "dropout": model_config.dropout,
                  "latent_activation": model_config.latent_activation}
        args.setdefault("latent_activation", False)  # saved before the option existed
        differ = [k for k, v in expect.items() if args.get(k) != v]
        if differ:
            raise ModelLoadError(f"{source}: model_args and model_config disagree on {', '.join(differ)}")
        module = build_module(int(args["n_items"]), model_config)
        try:
            module.load_state_dict(sd, strict=True)
        except RuntimeError as exc:
            raise ModelLoadError(f"{source}: weights do not match the stored architecture: {exc}") from exc
        module.eval()
        return cls(module.n_items, model_config, train_config, module)


def load_state_file(path: Path, expected_sha256: str | None = None) -> dict[str, Any]:
    """torch.load(weights_only=True) of a saved state, refusing altered files and anything needing pickled code."""
    if not path.exists():
        raise ModelLoadError(f"{path}: file not found")
    if expected_sha256 is not None and sha256_file(path) != expected_sha256:
        raise ModelLoadError(f"{path}: sha256 does not match {DIGEST_FILE} (file altered or corrupt)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        raise ModelLoadError(f"{path}: cannot be loaded safely (weights_only): {exc}") from exc
    if not isinstance(state, dict):
        raise ModelLoadError(f"{path}: expected a dict, got {type(state).__name__}")
    return state


def _read_digest(path: Path) -> str:
    if not path.exists():
        raise ModelLoadError(f"{path}: missing (the sha256 of {STATE_FILE} written at save time)")
    return path.read_text().strip()




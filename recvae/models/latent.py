"""What a trained VAE says beyond a ranking: each user's ELBO terms (the anomaly scores), each user's posterior mean
(the latent preferences) and the items' vectors in the decoder (for similar items).

Read-only uses of a trained `LatentAutoencoder` behind a `MultVAERecommender` (an ensemble lends its first such
member); the network itself stays in vae.py / recvae_net.py. Light imports: the pyfunc loads this module."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from recvae.models.sparse import CSRBatch

logger = logging.getLogger(__name__)

ELBO_COLUMNS = ("n_items", "nll_per_item", "kl", "neg_elbo")


class NotLatentModelError(ValueError):
    """The model has no latent user code or decoder (a baseline): it cannot give these answers."""


def latent_recommender(rec: Any) -> Any:
    """`rec` itself when it wraps a trained VAE network, else an ensemble's first such member; NotLatentModelError
    for a model without one (popularity, EASE, ALS, Mult-DAE has a code but no posterior: accepted)."""
    if getattr(rec, "module", None) is not None:
        return rec
    for member in getattr(rec, "members", ()):
        if getattr(member, "module", None) is not None:
            logger.info("using the ensemble's first VAE member (%s) for its latent answers", member.kind)
            return member
    raise NotLatentModelError(f"a {getattr(rec, 'kind', type(rec).__name__)} model has no latent user code or "
                              "decoder; anomaly scores, user embeddings and similar items need a VAE "
                              "(multvae, multdae, recvae)")


def _batches(rec: Any, X: sp.csr_matrix) -> Iterator[tuple[Any, CSRBatch, sp.csr_matrix]]:
    """(network in eval mode, batch, scipy rows) in the model's evaluation batch size, binarized like training."""
    module = rec.module
    if X.shape[1] != module.n_items:
        raise ValueError(f"input has {X.shape[1]} item columns; the model was trained on {module.n_items} items")
    X = sp.csr_matrix(X, dtype=np.float32, copy=True)
    X.sum_duplicates()
    X.data[:] = 1.0
    module.eval()
    device = next(module.parameters()).device
    size = int(getattr(rec.train_config, "eval_batch_size", 2000))
    for start in range(0, X.shape[0], size):
        part = X[start : start + size]
        yield module, CSRBatch.from_scipy(part, device), part


def user_elbo(rec: Any, X: sp.csr_matrix) -> dict[str, np.ndarray]:
    """Per user (rows of `X`): items, the multinomial negative log-likelihood of the user's own items per item,
    KL(q(z|x) || prior) and the negative ELBO (-sum log-likelihood + KL): higher is more anomalous.

    The likelihood is decoded from the posterior mean (what scoring uses, so it is deterministic); the KL is the
    network's own `kl` (closed form for Mult-VAE, RecVAE's composite prior at z = mean: its one-sample estimate
    taken at the mode), so a model with another prior scores with that prior. A user without items gets NaN
    likelihood terms."""
    rec = latent_recommender(rec)
    out: dict[str, list[np.ndarray]] = {c: [] for c in ELBO_COLUMNS}
    with torch.no_grad():
        for module, x, part in _batches(rec, X):
            mu, logvar = module.encode(x)
            log_pi = torch.log_softmax(module.decode(mu).float(), dim=1)
            ll = torch.zeros(x.n_rows, device=mu.device).index_add_(0, x.rows, log_pi[x.rows, x.indices])
            kl = module.kl(x, mu, logvar, mu).float()
            n = torch.from_numpy(np.diff(part.indptr).astype(np.float32)).to(mu.device)
            empty = n == 0
            nan = torch.full_like(ll, float("nan"))
            out["n_items"].append(n.cpu().numpy().astype(np.int64))
            out["nll_per_item"].append(torch.where(empty, nan, -ll / n.clamp(min=1)).cpu().numpy())
            out["kl"].append(kl.cpu().numpy())
            out["neg_elbo"].append(torch.where(empty, nan, -ll + kl).cpu().numpy())
    return {c: (np.concatenate(v) if v else np.zeros(0)) for c, v in out.items()}


def user_embeddings(rec: Any, X: sp.csr_matrix) -> np.ndarray:
    """(users, latent_dim) float32: the posterior mean of q(z|x) of each row of `X` (the Mult-DAE: its code)."""
    rec = latent_recommender(rec)
    parts = []
    with torch.no_grad():
        for module, x, _ in _batches(rec, X):
            parts.append(module.encode(x)[0].float().cpu().numpy())
    return np.concatenate(parts) if parts else np.zeros((0, rec.module.latent_dim), np.float32)


def item_vectors(rec: Any) -> np.ndarray:
    """(n_items, width) float32: the rows of the decoder's last weight matrix, one per item.

    An item's logit is <h(z), w_i> + b_i, where h(z) is the last hidden layer of the decoder (z itself for a
    one-layer decoder: RecVAE, a Mult-VAE with no hidden layer), so w_i is the direction in that space that raises
    item i's probability: two items with close directions are liked by the same users. The first (encoder) layer
    also has a row per item, but it is learned from inputs only and regularised by dropout; the decoder rows are
    what ranks the items, so they are the representation the recommendations themselves use."""
    rec = latent_recommender(rec)
    weight = rec.module.decoder[-1].weight
    return weight.detach().float().cpu().numpy()

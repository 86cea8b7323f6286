"""Several trained recommenders as one: the average of their softmax distributions over the items."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import scipy.sparse as sp
import torch

from recvae.models.base import Recommender, load_recommender

MEMBERS_DIR = "members"


class Ensemble(Recommender):
    """Scores log(mean_k softmax(scores_k)): the mixture of the members' multinomial distributions.

    Members must score the same item columns (the same snapshot's items). It is meant for models whose scores are
    logits of a multinomial (Mult-VAE, Mult-DAE, RecVAE); for Mult-VAE runs that differ only in their seed it is the
    usual seed ensemble, and `bench/results/vae_tuning.md` measures what it adds on ML-1M. It is built from
    fitted members and fits nothing itself (a scoring `Recommender`, not an `Estimator`).
    """

    kind = "ensemble"

    def __init__(self, members: list[Recommender]) -> None:
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least 2 members; got {len(members)}")
        self.members = list(members)
        self._check_members()

    def _check_members(self) -> None:
        """Take n_items and the item ids from the members, which must agree on both."""
        n_items = {m.n_items for m in self.members}
        if len(n_items) != 1:
            raise ValueError(f"ensemble members score different numbers of items: {sorted(n_items)}")
        with_ids = [m.items for m in self.members if m.items is not None]
        if with_ids and (len(with_ids) != len(self.members) or any(ids != with_ids[0] for ids in with_ids[1:])):
            raise ValueError("ensemble members were trained on different item columns (different snapshots); "
                             "retrain them on one snapshot")
        self.n_items = n_items.pop()
        self.items = with_ids[0] if with_ids else None

    def scores(self, X: sp.csr_matrix) -> torch.Tensor:
        """(X.shape[0], n_items) float32 log of the members' mean softmax."""
        total = None
        for member in self.members:
            p = torch.softmax(member.scores(X).float(), dim=1)
            total = p if total is None else total.add_(p)
        assert total is not None
        return total.log_().sub_(math.log(len(self.members)))

    def ranking_scores(self, X: sp.csr_matrix) -> torch.Tensor:
        """`scores(X)`: always a new tensor."""
        return self.scores(X)

    def params(self) -> dict[str, Any]:
        """{'members': [{'kind': ..., 'params': ...}, ...]} in member order."""
        return {"members": [{"kind": m.kind, "params": m.params()} for m in self.members]}

    def _save_state(self, path: Path) -> None:
        for i, member in enumerate(self.members):
            member.save(path / MEMBERS_DIR / str(i))

    @classmethod
    def _load_state(cls, path: Path, meta: dict[str, Any]) -> Ensemble:
        expected = len(meta.get("params", {}).get("members", []))
        folders = [path / MEMBERS_DIR / str(i) for i in range(expected)]
        missing = [str(f) for f in folders if not f.is_dir()]
        if expected < 2 or missing:
            raise ValueError(f"{path}: ensemble of {expected} members, missing {', '.join(missing) or 'member list'}")
        return cls([load_recommender(f) for f in folders])

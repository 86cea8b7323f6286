"""Deterministic MovieLens-shaped interactions: power-law item popularity, users from latent taste groups.

Each item has a Zipf-like popularity weight (rank + offset) ** -exponent and a home taste group. Each user
belongs to one group and draws items (without repeats) from the popularity weights with the items of
their group boosted, so what a user saw reveals their group: a collaborative model can learn it, while
popularity cannot. Ratings are half stars in [0.5, 5]; in-group items get higher ratings, so keeping
rating > 3.5 (the paper's binarization) keeps mostly in-group items. Timestamps are seconds spread over
each user's active period, so every code path (explicit ratings, temporal split) can be exercised.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

_T0 = 946_684_800  # 2000-01-01 UTC
_SPAN = 15 * 365 * 86_400


@dataclass(frozen=True)
class SyntheticSpec:
    """Shape and structure of a generated data set (counts are before preprocessing)."""

    n_users: int
    n_items: int
    mean_per_user: float  # mean draws per user; repeated draws of an item are dropped, so rows are fewer
    min_per_user: int = 20  # MovieLens keeps users with >= 20 ratings
    n_groups: int = 20  # latent taste groups
    group_boost: float = 20.0  # weight multiplier of a user's in-group items
    popularity_exponent: float = 1.2
    popularity_offset: float = 50.0
    seed: int = 0

    def validate(self) -> None:
        if self.n_users < 1 or self.n_items < 2:
            raise ValueError(f"need n_users >= 1 and n_items >= 2; got {self.n_users} x {self.n_items}")
        if not 1 <= self.min_per_user <= self.mean_per_user:
            raise ValueError(f"need 1 <= min_per_user ({self.min_per_user}) <= mean_per_user ({self.mean_per_user})")
        if self.mean_per_user > self.n_items / 2:
            raise ValueError(f"mean_per_user {self.mean_per_user} too large for {self.n_items} items")
        if self.n_groups < 1 or self.group_boost < 1:
            raise ValueError("need n_groups >= 1 and group_boost >= 1")


PRESETS: dict[str, SyntheticSpec] = {
    # tests: fast, still with a clear taste structure
    "small": SyntheticSpec(n_users=2_000, n_items=500, mean_per_user=40, min_per_user=10, n_groups=10,
                           popularity_exponent=1.0, popularity_offset=10.0),
    # ML-20M shape: about 136,600 users x 20,108 items x 10M interactions after rating > 3.5 and >= 5 per
    # user (ML-20M: 136,677 x 20,108 x 10.0M); about 19M ratings before, as ML-20M's 20M
    "ml-20m": SyntheticSpec(n_users=136_700, n_items=20_108, mean_per_user=195, min_per_user=20, n_groups=40,
                            group_boost=58.0, popularity_exponent=1.0, popularity_offset=100.0),
}


def spec_for(preset: str = "small", **overrides: Any) -> SyntheticSpec:
    """The preset's spec with fields overridden (e.g. n_users=500, seed=3)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown synthetic preset {preset!r}; presets: {', '.join(PRESETS)}")
    known = set(asdict(PRESETS[preset]))
    unknown = set(overrides) - known
    if unknown:
        raise ValueError(
            f"unknown synthetic parameter(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}"
        )
    spec = replace(PRESETS[preset], **overrides)
    spec.validate()
    return spec


def generate(preset: str = "small", **overrides: Any) -> pd.DataFrame:
    """Interactions (user, item, rating, timestamp) of `preset` with `overrides`; same arguments, same frame.

    Users are 1..n_users and items 1..n_items (int64, like MovieLens ids); rows are ordered by user then
    item, as in ML-20M's ratings.csv.
    """
    spec = spec_for(preset, **overrides)
    rng = np.random.default_rng(spec.seed)  # one stream: the order of the draws below fixes the data
    n_users, n_items = spec.n_users, spec.n_items

    ranks = rng.permutation(n_items)  # popularity rank of each item id
    popularity = (ranks + spec.popularity_offset) ** -spec.popularity_exponent
    home = rng.integers(0, spec.n_groups, n_items)  # each item's taste group
    quality = rng.normal(0.0, 0.4, n_items)
    group = rng.integers(0, spec.n_groups, n_users)
    n_u = _draws_per_user(rng, spec)
    user, item = _draw_pairs(rng, spec, popularity, home, group, n_u)

    in_group = home[item] == group[user]
    user_bias = rng.normal(0.0, 0.35, n_users)
    raw = 3.2 + 1.3 * in_group + quality[item] + user_bias[user] + rng.normal(0.0, 0.8, len(user))
    rating = np.clip(np.round(raw * 2.0) / 2.0, 0.5, 5.0)
    del raw, in_group

    start = _T0 + rng.integers(0, _SPAN, n_users)
    active = np.minimum(rng.lognormal(np.log(200 * 86_400), 1.5, n_users), _SPAN).astype(np.int64) + 1
    timestamp = start[user] + (rng.random(len(user)) * active[user]).astype(np.int64)

    df = pd.DataFrame({"user": user + 1, "item": item + 1, "rating": rating, "timestamp": timestamp}, copy=False)
    logger.info("synthetic %s: %d users x %d items, %d interactions", preset, n_users, n_items, len(df))
    return df


def _draws_per_user(rng: np.random.Generator, spec: SyntheticSpec) -> np.ndarray:
    """Draws per user: min_per_user plus a lognormal share with mean mean_per_user - min_per_user."""
    extra = spec.mean_per_user - spec.min_per_user
    if extra > 0:
        sigma = 1.2
        more = np.round(rng.lognormal(np.log(max(extra, 1e-9)) - sigma**2 / 2, sigma, spec.n_users)).astype(np.int64)
        n_u = spec.min_per_user + more
    else:
        n_u = np.full(spec.n_users, spec.min_per_user, np.int64)
    return np.minimum(n_u, spec.n_items // 2)


def _draw_pairs(
    rng: np.random.Generator, spec: SyntheticSpec, popularity: np.ndarray, home: np.ndarray, group: np.ndarray,
    n_u: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """(user, item) codes of the distinct pairs drawn, ordered by user then item; each group's members draw
    from the popularity weights with the group's own items boosted."""
    n_items = spec.n_items
    users_parts, items_parts = [], []
    for g in range(spec.n_groups):
        members = np.flatnonzero(group == g)
        if len(members) == 0:
            continue
        weights = popularity * np.where(home == g, spec.group_boost, 1.0)
        cdf = np.cumsum(weights)
        cdf /= cdf[-1]
        counts = n_u[members]
        draws = np.searchsorted(cdf, rng.random(int(counts.sum())), side="right").astype(np.int64)
        users_parts.append(np.repeat(members.astype(np.int64), counts))
        items_parts.append(np.minimum(draws, n_items - 1))
    key = np.concatenate(users_parts) * n_items + np.concatenate(items_parts)
    del users_parts, items_parts
    key.sort()  # by user, then item (a sort and a neighbour compare: cheaper than np.unique at this size)
    key = key[np.r_[True, key[1:] != key[:-1]]]  # drop repeated draws
    user = key // n_items
    return user, key - user * n_items

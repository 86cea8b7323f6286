"""Baselines behind the same scoring contract as the Mult-VAE: popularity, EASE (Steck 2019) and ALS (implicit),
their registry by kind and their tuning on validation users."""

from recvae.models.baselines.als import ALS
from recvae.models.baselines.common import Baseline
from recvae.models.baselines.ease import EASE, available_memory_bytes, gram_matrix, spd_inverse
from recvae.models.baselines.popularity import Popularity
from recvae.models.baselines.registry import BASELINES, fit_baseline, make_baseline
from recvae.models.baselines.tuning import param_grid, tune

__all__ = [
    "ALS",
    "BASELINES",
    "Baseline",
    "EASE",
    "Popularity",
    "available_memory_bytes",
    "fit_baseline",
    "gram_matrix",
    "make_baseline",
    "param_grid",
    "spd_inverse",
    "tune",
]

"""Which exceptions are the user's (bad input, configuration, data) and which are passing faults (a database or
tracking server away): the CLI ends both in one `error:` line; an Airflow task fails at once on the first kind and
retries the second. Anything else is a bug. Imports are inside the functions, so this module stays light."""

from __future__ import annotations


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors that cannot succeed on a retry: bad input, configuration, data or model references."""
    from recvae.config import ConfigError
    from recvae.data.datasets import ChecksumError, DatasetNotFoundError
    from recvae.data.snapshot import SnapshotError
    from recvae.data.validate import DataValidationError
    from recvae.models.base import ModelLoadError
    from recvae.models.latent import NotLatentModelError
    from recvae.serving.filters import ItemFilterError
    from recvae.serving.items import ItemMismatchError
    from recvae.serving.recommend import UnknownUsersError
    from recvae.serving.store import IdentifierError
    from recvae.tracking import ComparisonError, ModelNotFoundError, RegistryInputError

    return (DataValidationError, ConfigError, SnapshotError, DatasetNotFoundError, ChecksumError, FileNotFoundError,
            FileExistsError, NotADirectoryError, IsADirectoryError, PermissionError, IdentifierError,
            ModelNotFoundError,
            ItemMismatchError, ModelLoadError, RegistryInputError, UnknownUsersError, ComparisonError, ItemFilterError,
            NotLatentModelError)


def fault_errors() -> tuple[type[BaseException], ...]:
    """Errors of a service that may pass (database, tracking store or server, network): worth a retry."""
    from urllib.error import URLError

    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import OperationalError

    from recvae.serving.store import StoreError
    from recvae.training.distributed import RankFailedError

    # OperationalError: MLflow's SQL tracking store reaching its database; URLError: a download's server;
    # RankFailedError: a rank of a distributed training died or timed out
    return (StoreError, MlflowException, OperationalError, URLError, ConnectionError, TimeoutError, RankFailedError)


def is_user_error(exc: BaseException) -> bool:
    """True when `exc` is the user's to fix (a retry would fail the same way)."""
    return isinstance(exc, user_errors())

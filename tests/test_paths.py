"""The one home of local defaults: every default path and URL lives under $RECVAE_HOME, else ./.recvae."""

from __future__ import annotations

from pathlib import Path

from recvae import paths


def test_defaults_live_under_dot_recvae_in_the_current_directory(tmp_path, monkeypatch):
    for var in (paths.HOME_ENV, paths.DB_URL_ENV, paths.TRACKING_URI_ENV):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "empty-home"))  # nothing may land under ~
    monkeypatch.chdir(tmp_path)
    home = tmp_path / ".recvae"
    assert paths.home() == home and home.is_dir()
    assert paths.default_db_url() == f"sqlite:///{home / 'recommendations.db'}"
    assert paths.default_tracking_uri() == f"sqlite:///{home / 'mlflow.db'}"
    assert paths.snapshots_dir().is_dir() and paths.runs_dir().is_dir() and paths.artifacts_dir().is_dir()
    assert not (tmp_path / "empty-home").exists()


def test_recvae_home_and_urls_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(paths.HOME_ENV, str(tmp_path / "a" / "b"))
    monkeypatch.setenv(paths.DB_URL_ENV, "postgresql+psycopg://u@h/db")
    monkeypatch.delenv(paths.TRACKING_URI_ENV, raising=False)
    assert paths.home() == tmp_path / "a" / "b" and paths.home().is_dir()  # created, parents too
    assert paths.default_db_url() == "postgresql+psycopg://u@h/db"
    assert paths.default_tracking_uri() == f"sqlite:///{tmp_path / 'a' / 'b' / 'mlflow.db'}"
    assert paths.home(create=False) == paths.home()


def test_no_module_builds_its_own_default_location():
    """The bug this guards against: the store defaulted to ~/.local/share/recvae while everything else used .recvae."""
    package = Path(paths.__file__).parent
    offenders = [p.name for p in package.rglob("*.py") if p.name != "paths.py"
                 and (".local" in p.read_text() or '"RECVAE_HOME"' in p.read_text() or "'.recvae'" in p.read_text())]
    assert offenders == []

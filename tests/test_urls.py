"""mask_url: the one function that hides passwords in database URLs, malformed ones included."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import make_url

from recvae.data import readers
from recvae.data.readers import Source
from recvae.serving.store import database as store  # the module that masks the store's URLs
from recvae.urls import mask_url, url_secrets


@pytest.mark.parametrize(
    "url, masked, secret",
    [
        ("postgresql+psycopg://alice:s3cr3t@db:5432/recs", "postgresql+psycopg://alice:***@db:5432/recs", "s3cr3t"),
        ("u:secretpw@127.0.0.1", "u:***@127.0.0.1", "secretpw"),  # no scheme: make_url cannot parse it
        ("postgresql://u:p@ss@db/recs", "postgresql://u:***@db/recs", "p@ss"),  # '@' not percent-encoded
        ("postgresql://u:pa:ss/w@db/recs", "postgresql://u:***@db/recs", "pa:ss/w"),
        ("postgresql://u:pa?ss@db/recs", "postgresql://u:***@db/recs", "pa?ss"),
        ("postgresql://u:p%40ss%3A@db/recs?sslmode=require", "postgresql://u:***@db/recs?sslmode=require", "p@ss:"),
        ("postgresql://u@db/recs?sslmode=require&password=qpw&x=1",
         "postgresql://u@db/recs?sslmode=require&password=***&x=1", "qpw"),
        ("postgresql://u@db/recs?PWD=qpw", "postgresql://u@db/recs?PWD=***", "qpw"),
        ("host=db user=u password=dsnpw dbname=recs", "host=db user=u password=*** dbname=recs", "dsnpw"),
        ("not a url://bob:hunter2@x", "not a url://bob:***@x", "hunter2"),
    ],
)
def test_mask_url_hides_every_password(url, masked, secret):
    assert mask_url(url) == masked
    assert secret in url_secrets(url)


def test_mask_url_leaves_urls_without_passwords_alone():
    for url in ("sqlite:///tmp/recs.db", "sqlite:////data/a@b/recs.db", "postgresql://u@db/recs", "postgresql://db/x"):
        assert mask_url(url) == url and url_secrets(url) == []
    assert mask_url(None) == "<no url>"


def test_mask_url_of_a_url_object_and_decoded_secrets():
    url = make_url("postgresql+psycopg://u:p%40ss@db/recs?password=q")
    assert mask_url(url) == "postgresql+psycopg://u:***@db/recs?password=***"
    assert {"p@ss", "q"} <= set(url_secrets(url))  # what a driver would echo: the decoded password


def test_one_masking_function_for_the_whole_package():
    assert store.mask_url is mask_url and readers.mask_url is mask_url
    assert not hasattr(readers, "_mask_url")
    src = Source(format="sql", path="postgresql://u:p@ss@db/recs", query="ratings")
    assert src.describe()["path"] == "postgresql://u:***@db/recs"  # the old readers regex kept 'ss@'

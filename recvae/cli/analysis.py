"""`recvae anomalies`, `recvae embeddings` and `recvae similar-items`: what the model says beyond the lists, into
the recommendations database."""

from __future__ import annotations

import argparse
from typing import Any

from recvae.cli.args import add_batch_key_option, add_db_option, batch_key, db_url
from recvae.cli.output import format_table
from recvae.config import ConfigError


def _common(p: argparse.ArgumentParser, *, snapshot: bool = True) -> None:
    p.add_argument("--model", default="models:/recvae@champion", metavar="URI")
    if snapshot:
        p.add_argument("--snapshot", metavar="DIR", help="snapshot whose users are scored (default: the latest)")
    add_db_option(p)
    add_batch_key_option(p)
    p.add_argument("--keep", type=int, default=3, help="published batches of this kind kept")


def _check_keep(args: argparse.Namespace) -> None:
    if args.keep < 1:
        raise ConfigError(f"--keep must be >= 1 (published batches kept, the current one included); got {args.keep}")


def add_anomalies(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("anomalies", help="anomalous users from the model's likelihood, into SQL",
                              description="Score every user of the snapshot with the model's own ELBO terms: "
                              "-log-likelihood of the user's items per item, KL(q||prior), the negative ELBO, and "
                              "each as a percentile among the training users; publish them to recvae_user_anomalies "
                              "and log their histogram to the model's MLflow run.")
    _common(p)
    p.add_argument("--top", type=int, default=10, metavar="K", help="print the K most anomalous users (0: none)")
    p.add_argument("--score", choices=["nll_per_item", "kl", "kl_low", "neg_elbo"], default="nll_per_item",
                   help="the score --top ranks by (kl_low: the lowest KL first)")
    p.add_argument("--no-mlflow", action="store_true", help="do not log the histogram to MLflow")
    return p


def cmd_anomalies(args: argparse.Namespace) -> int:
    from recvae import pipeline
    from recvae.serving.store import OutputStore

    _check_keep(args)
    if args.top < 0:
        raise ConfigError(f"--top must be >= 0; got {args.top}")
    db = db_url(args)
    result = pipeline.anomalies_step(model_uri=args.model, snapshot_dir=args.snapshot, db_url=db,
                                     batch_key=batch_key(args), keep=args.keep,
                                     log_mlflow=not args.no_mlflow)
    print(format_table([result]))
    if args.top:
        with OutputStore(db) as store:
            rows = store.query("anomalous_users", score=args.score, n=args.top)
        print(format_table(rows) if rows else "no scored users")
    return 0


def add_embeddings(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("embeddings", help="latent user preferences (posterior means) to Parquet and SQL",
                              description="The posterior mean of q(z|x) of every user of the snapshot, to --parquet "
                              "and to recvae_user_embeddings; --similar-to USER prints the users closest to USER in "
                              "the published batch instead.")
    _common(p)
    p.add_argument("--parquet", metavar="FILE", help="also write the embeddings here (user_id, embedding)")
    p.add_argument("--similar-to", metavar="USER", help="print the users most similar to USER (cosine) in the "
                   "current embeddings batch; computes nothing")
    p.add_argument("--top-n", type=int, default=10, help="how many similar users --similar-to prints")
    return p


def cmd_embeddings(args: argparse.Namespace) -> int:

    _check_keep(args)
    if args.top_n < 1:
        raise ConfigError(f"--top-n must be >= 1; got {args.top_n}")
    db = db_url(args)
    if args.similar_to is not None:
        from recvae.serving.embeddings import similar_users
        from recvae.serving.store import OutputStore

        with OutputStore(db) as store:
            frame = store.read("user_embeddings")
        print(format_table(similar_users(frame, args.similar_to, args.top_n).to_dict("records")))
        return 0
    from recvae import pipeline

    result = pipeline.embeddings_step(model_uri=args.model, snapshot_dir=args.snapshot, db_url=db,
                                      batch_key=batch_key(args),
                                      parquet=args.parquet, keep=args.keep)
    print(format_table([result]))
    return 0


def add_similar_items(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("similar-items", help="each item's most similar items (decoder vectors), into SQL",
                              description="Cosine between the rows of the decoder's last weight matrix (one per "
                              "item): exact chunked products for catalogues up to 50,000 items, faiss above; the "
                              "top N of every item go to recvae_similar_items.")
    _common(p, snapshot=False)
    p.add_argument("--top-n", type=int, default=20)
    p.add_argument("--method", choices=["auto", "exact", "flat", "ivf"], default="auto",
                   help="exact matmul, faiss IndexFlatIP, faiss IVF (approximate); auto picks by catalogue size")
    return p


def cmd_similar_items(args: argparse.Namespace) -> int:
    from recvae import pipeline

    _check_keep(args)
    if args.top_n < 1:
        raise ConfigError(f"--top-n must be >= 1; got {args.top_n}")
    result = pipeline.similar_items_step(model_uri=args.model, top_n=args.top_n, db_url=db_url(args),
                                         batch_key=batch_key(args),
                                         method=args.method, keep=args.keep)
    print(format_table([result]))
    return 0

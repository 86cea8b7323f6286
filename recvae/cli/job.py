"""`recvae pipeline`: the main job in one process."""

from __future__ import annotations

import argparse
from typing import Any

from recvae.cli.args import add_db_option
from recvae.cli.output import format_table
from recvae.data.readers.source import FORMATS
from recvae.models.kinds import BASELINE_KINDS, MODEL_KINDS


def add_pipeline(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("pipeline", help="the main job: prepare, train + baselines, promote, recommend",
                              description="Build a snapshot, train Mult-VAE and the baselines, promote the "
                              "challenger if it wins on validation, and write top-N for every user to SQL. "
                              "Defaults: synthetic data, SQLite and a local MLflow store under .recvae/.")
    p.add_argument("--dataset", default="synthetic", help="named dataset (default: synthetic)")
    p.add_argument("--input", metavar="PATH", help="an interactions file instead of --dataset")
    p.add_argument("--format", choices=FORMATS, help="format of --input (default: guessed from the name)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    p.add_argument("--model", choices=MODEL_KINDS, default="vae", help="the challenger (default: Mult-VAE)")
    p.add_argument("--baselines", default=",".join(BASELINE_KINDS), help="comma separated; '' for none")
    p.add_argument("--margin", type=float, default=0.0, help="NDCG@100 margin the challenger must win by")
    p.add_argument("--min-confidence", type=float, default=None, metavar="LEVEL",
                   help="also require the challenger to beat the champion and each baseline significantly (paired "
                        "one-sided t-test on the validation users) at this level, e.g. 0.95 (default: off)")
    p.add_argument("--replace-champion-of-other-items", action="store_true",
                   help="a champion trained on other items (another data set) is replaced by a challenger that beats "
                        "the baselines, instead of an error")
    p.add_argument("--top-n", type=int, default=100)
    add_db_option(p)
    p.add_argument("--experiment", default="recvae")
    p.add_argument("--name", default="recvae", help="registered model name")
    return p


def cmd_pipeline(args: argparse.Namespace) -> int:
    from recvae import pipeline

    result = pipeline.run_pipeline(
        dataset=args.dataset, input_path=args.input, input_format=args.format, overrides=args.overrides,
        baselines=[b for b in args.baselines.split(",") if b.strip()], margin=args.margin, top_n=args.top_n,
        db_url=args.db, experiment=args.experiment, model_name=args.name, kind=args.model,
        replace_champion_of_other_items=args.replace_champion_of_other_items, min_confidence=args.min_confidence,
    )
    print(format_table(result["models"]))
    print(result["decision"]["reason"])
    print(format_table([result["batch"]]))
    return 0

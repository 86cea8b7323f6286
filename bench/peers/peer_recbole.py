"""Train RecBole's MultiVAE on the shared split and score the test users' fold-in rows (run in .venv-recbole).

Training goes through RecBole's own pipeline (atomic .inter file -> create_dataset -> UserDataLoader ->
Trainer.fit), so the time per epoch includes RecBole's data handling. Scoring calls the trained model's
forward() on the test users' fold-in rows: MultiVAE encodes a user's history, so unseen users need no retraining.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peer_common as pc  # noqa: E402

SCORE_BATCH = 2_000


def _write_inter(train, folder: Path) -> None:
    """RecBole atomic file: one `user item` line per training interaction (our row / column indices)."""
    folder.mkdir(parents=True, exist_ok=True)
    coo = train.tocoo()
    order = np.lexsort((coo.col, coo.row))
    with open(folder / "peer.inter", "w") as f:
        f.write("user_id:token\titem_id:token\n")
        np.savetxt(f, np.stack([coo.row[order], coo.col[order]], axis=1), fmt="%d", delimiter="\t")


def recbole_config(args: Any, work: Path) -> Any:
    """RecBole's Config for MultiVAE with the shared settings, reading the atomic file under `work`."""
    from recbole.config import Config

    return Config(
        model="MultiVAE",
        dataset="peer",
        config_dict={
            "data_path": str(work),
            "checkpoint_dir": str(work / "saved"),
            "USER_ID_FIELD": "user_id",
            "ITEM_ID_FIELD": "item_id",
            "load_col": {"inter": ["user_id", "item_id"]},
            "epochs": args.epochs,
            "train_batch_size": args.batch_size,
            "learner": "adam",
            "learning_rate": args.lr,
            "weight_decay": 0.0,
            "mlp_hidden_size": [args.hidden],
            # RecBole splits its encoder output in halves (mu, logvar): z has latent_dimension / 2 units.
            "latent_dimension": 2 * args.latent,
            "dropout_prob": args.dropout,
            "anneal_cap": args.anneal_cap,
            "total_anneal_steps": args.total_anneal_steps,
            "train_neg_sample_args": None,
            # Everything in the .inter file is training data: RecBole's own split keeps it all in "train".
            "eval_args": {"split": {"RS": [1.0, 0.0, 0.0]}, "group_by": None, "order": "RO", "mode": "full"},
            "eval_step": 0,
            "stopping_step": 10**9,
            "use_gpu": False,
            "device": "cpu",
            "seed": args.seed,
            "reproducibility": True,
            "show_progress": False,
            "save_dataset": False,
            "save_dataloaders": False,
            "log_wandb": False,
            "worker": 0,
            "state": "WARNING",
        },
    )


def time_epochs(trainer: Any) -> pc.EpochTimer:
    """Time each epoch of RecBole's own fit() loop by wrapping its per-epoch method (the loop is unchanged)."""
    timer = pc.EpochTimer()
    train_epoch = trainer._train_epoch

    def timed_epoch(*a: Any, **kw: Any) -> Any:
        timer.start()
        try:
            return train_epoch(*a, **kw)
        finally:
            timer.stop()

    trainer._train_epoch = timed_epoch
    return timer


def score_test_users(model: Any, dataset: Any, test_tr: Any, n_items: int, writer: pc.ScoreWriter) -> np.ndarray:
    """The test users' fold-in rows through model.forward in eval mode, in our item columns; which of our items
    RecBole knows (the others, absent from training, score -inf)."""
    # RecBole re-indexes items (token strings, index 0 is [PAD]); map our columns to its ids.
    token_to_id = dataset.field2token_id["item_id"]
    rb_cols = np.array([token_to_id.get(str(j), -1) for j in range(n_items)], dtype=np.int64)
    known = rb_cols >= 0
    n_rb = dataset.item_num
    model.eval()
    with torch.no_grad():
        for start in range(0, test_tr.shape[0], SCORE_BATCH):
            block = test_tr[start : start + SCORE_BATCH].tocoo()
            x = torch.zeros(block.shape[0], n_rb)
            keep = known[block.col]
            x[torch.from_numpy(block.row[keep]).long(), torch.from_numpy(rb_cols[block.col[keep]])] = 1.0
            logits, _, _ = model.forward(x)
            out = np.full((block.shape[0], n_items), -np.inf, dtype=np.float32)
            out[:, known] = logits[:, torch.from_numpy(rb_cols[known])].numpy()
            writer.add(out, test_tr[start : start + SCORE_BATCH])
    return known


def main() -> None:
    """Train RecBole's MultiVAE on --data, score the test users, write result.json and the scores to --out."""
    args = pc.parser(__doc__).parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    import recbole
    from recbole.data import create_dataset
    from recbole.data.dataloader import UserDataLoader
    from recbole.model.general_recommender import MultiVAE
    from recbole.trainer import Trainer
    from recbole.utils import init_logger, init_seed

    t0 = time.perf_counter()
    split = pc.load_split(args.data)
    train = split["train"]
    n_items = train.shape[1]
    work = args.out / "recbole-work"
    _write_inter(train, work / "peer")
    config = recbole_config(args, work)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    logging.getLogger().setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    dataset = create_dataset(config)
    train_set = dataset.build()[0]
    train_data = UserDataLoader(config, train_set, None, shuffle=True)
    model = MultiVAE(config, train_set).to(config["device"])
    trainer = Trainer(config, model)
    setup_s = time.perf_counter() - t0

    timer = time_epochs(trainer)
    t1 = time.perf_counter()
    trainer.fit(train_data, valid_data=None, verbose=False, saved=False, show_progress=False)
    fit_s = time.perf_counter() - t1

    test_tr = split["test_tr"]
    writer = pc.ScoreWriter(args.out, args.output, test_tr.shape[0], n_items, args.topk)
    t2 = time.perf_counter()
    known = score_test_users(model, dataset, test_tr, n_items, writer)
    score_s = time.perf_counter() - t2
    output = writer.close()
    pc.write_result(
        args.out,
        {
            "system": "recbole",
            "library": f"RecBole {recbole.__version__} MultiVAE",
            "torch": torch.__version__,
            "numpy": np.__version__,
            "threads": torch.get_num_threads(),
            "epoch_times_s": timer.times,
            "setup_s": setup_s,
            "fit_s": fit_s,
            "score_s": score_s,
            "n_test_users": int(test_tr.shape[0]),
            "output": output,
            "foldin": "encoder on fold-in rows (model.forward in eval mode: z = mu)",
            "notes": [
                "reparameterisation noise std 0.01 in training (RecBole's choice; the paper samples N(0, 1))",
                f"RecBole trains {dataset.user_num} users: its [PAD] user 0 (empty row) is one of them",
                f"{int((~known).sum())} items absent from training get score -inf",
            ],
        },
    )


if __name__ == "__main__":
    main()

"""Train Cornac's VAECF on the shared split and score the test users' fold-in rows (run in .venv-cornac).

Training is Cornac's own `VAECF.fit(cornac.data.Dataset)`; the time of each epoch is read by wrapping the
progress-bar range that Cornac's training loop iterates over (the loop itself is unchanged). Scoring does
what `VAECF.score` does for a known user (encode -> mu -> decode), on the test users' fold-in rows instead of
training rows, so unseen users need no retraining.
"""

from __future__ import annotations

import sys
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peer_common as pc  # noqa: E402

SCORE_BATCH = 2_000


class _TimedRange:
    """Stands in for tqdm.trange in Cornac's training loop and times each epoch."""

    def __init__(self, timer: pc.EpochTimer, *args, **kwargs) -> None:
        self.timer, self.range = timer, range(*args)

    def __iter__(self):
        for epoch in self.range:
            self.timer.start()
            yield epoch
            self.timer.stop()

    def set_postfix(self, *args, **kwargs) -> None:
        pass


def cornac_dataset(train: Any, seed: int) -> Any:
    """The training CSR as a cornac.data.Dataset whose user and item indices are ours (identity id maps)."""
    from cornac.data import Dataset

    n_users, n_items = train.shape
    coo = train.tocoo()
    return Dataset(
        num_users=n_users,
        num_items=n_items,
        uid_map=OrderedDict((i, i) for i in range(n_users)),
        iid_map=OrderedDict((j, j) for j in range(n_items)),
        uir_tuple=(coo.row.astype(np.int64), coo.col.astype(np.int64), coo.data.astype(np.float64)),
        seed=seed,
    )


def score_test_users(vae: Any, test_tr: Any, writer: pc.ScoreWriter) -> None:
    """What `VAECF.score` does for a known user (encode -> mu -> decode), on the test users' fold-in rows."""
    with torch.no_grad():
        for start in range(0, test_tr.shape[0], SCORE_BATCH):
            block = test_tr[start : start + SCORE_BATCH]
            x = torch.from_numpy(block.toarray().astype(np.float32))
            mu, _ = vae.encode(x)
            # The decoder's logits: the same ranking as decode()'s softmax, without float32 underflow ties.
            logits = vae.decoder(mu)
            writer.add(logits.numpy(), block)


def main() -> None:
    """Train Cornac's VAECF on --data, score the test users, write result.json and the scores to --out."""
    args = pc.parser(__doc__).parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    import cornac
    from cornac.models import VAECF
    from cornac.models.vaecf import vaecf as vaecf_module

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    split = pc.load_split(args.data)
    train = split["train"]
    n_items = train.shape[1]
    train_set = cornac_dataset(train, args.seed)
    model = VAECF(
        k=args.latent,
        autoencoder_structure=[args.hidden],
        act_fn="tanh",
        likelihood="mult",
        n_epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        beta=args.anneal_cap,
        seed=args.seed,
        verbose=False,
        use_gpu=False,
    )
    setup_s = time.perf_counter() - t0

    timer = pc.EpochTimer()
    vaecf_module.trange = lambda *a, **kw: _TimedRange(timer, *a, **kw)
    t1 = time.perf_counter()
    model.fit(train_set)
    fit_s = time.perf_counter() - t1

    test_tr = split["test_tr"]
    writer = pc.ScoreWriter(args.out, args.output, test_tr.shape[0], n_items, args.topk)
    t2 = time.perf_counter()
    score_test_users(model.vae.eval(), test_tr, writer)
    score_s = time.perf_counter() - t2
    output = writer.close()
    pc.write_result(
        args.out,
        {
            "system": "cornac",
            "library": f"Cornac {cornac.__version__} VAECF",
            "torch": torch.__version__,
            "numpy": np.__version__,
            "threads": torch.get_num_threads(),
            "epoch_times_s": timer.times,
            "setup_s": setup_s,
            "fit_s": fit_s,
            "score_s": score_s,
            "n_test_users": int(test_tr.shape[0]),
            "output": output,
            "foldin": "encoder on fold-in rows (vae.encode -> mu -> decoder), as VAECF.score does for known users",
            "notes": [
                f"constant beta = {args.anneal_cap} (VAECF has no KL annealing)",
                "no input dropout and no L2 normalisation of the input (VAECF has neither)",
                "users visited in the same order every epoch (VAECF iterates user_iter(shuffle=False))",
            ],
        },
    )


if __name__ == "__main__":
    main()

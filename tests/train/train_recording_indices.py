"""The trainer with a batch hook that writes the sample indices each rank saw, per epoch,
as <out>/indices_rank<R>_epoch<E>.json (tests/train/test_train.py runs it under torchrun)."""

import json
import sys
from pathlib import Path

from dali_snapmix.trainer import parse_args, train


def main(argv: list[str]) -> None:
    cfg = parse_args(argv)
    seen: dict[tuple[int, int], list[int]] = {}

    def record(epoch: int, rank: int, batch) -> None:
        seen.setdefault((rank, epoch), []).extend(batch.indices.tolist())

    train(cfg, on_batch=record)
    for (rank, epoch), idx in seen.items():
        (Path(cfg.out) / f"indices_rank{rank}_epoch{epoch}.json").write_text(json.dumps(idx))


if __name__ == "__main__":
    main(sys.argv[1:])

"""The trainer, each rank writing its mixer's state at the end as <out>/mixer_rank<R>.pt
(tests/train/test_train.py runs it under torchrun)."""

import sys
from pathlib import Path

import torch

from dali_snapmix import trainer


def main(argv: list[str]) -> None:
    finish = trainer.finish

    def saving(run):
        torch.save(run.mixer.state_dict(), Path(run.cfg.out) / f"mixer_rank{run.rank}.pt")
        return finish(run)

    trainer.finish = saving  # train() looks it up when it ends
    trainer.train(trainer.parse_args(argv))


if __name__ == "__main__":
    main(sys.argv[1:])

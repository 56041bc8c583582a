"""Train a fine-grained classifier on DALI batches with SnapMix (or another mixing method).

    python train_dali.py --data DIR                      # the paper's recipe: ResNet-50, 448 crops, 200 epochs
    python train_dali.py --preset demo --compare baseline,cutmix,snapmix   # what `make demo` runs
    torchrun --nproc_per_node 4 train_dali.py --data DIR  # one process per GPU (gloo on CPUs)

`python train_dali.py --help` lists every setting. The trainer itself is
dali_snapmix/trainer.py (setup, resume, one epoch, evaluate, checkpoint); its settings
are dali_snapmix/config.py. Both are in the package so that benchmarks and your own
scripts can call ``train(Config(...))`` as this script does.
"""

from dali_snapmix.trainer import main

if __name__ == "__main__":
    main()

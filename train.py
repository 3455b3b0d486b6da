#!/usr/bin/env python
"""Train a model: ``python train.py model=minialexnet_v4 data=cifar100 trainer.max_epochs=5``.

Sweep with ``-m``: ``python train.py -m model=lenet,lenet_v2 task.optimizer.lr=0.1,0.01``.
A bad value or file prints one paragraph (``error: ...``) and exits 1; ``--debug`` shows the full traceback.
"""
from labkit.cli.train import cli

if __name__ == "__main__":
    cli()

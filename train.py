"""Train one model on one dataset: `python train.py model=cnn data=cifar10`, the short form of `imgrec train`.

Tab completion: eval "$(python train.py -sc install=bash)" (Hydra's script completes files that hold
@hydra.main; that call is imgrec.verbs.train.main's)."""

from imgrec.console import exit_now
from imgrec.verbs.train import main

if __name__ == "__main__":
    main()
    exit_now()

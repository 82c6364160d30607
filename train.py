"""Train one model on one dataset: `python train.py model=cnn data=cifar10` (see conf/train.yaml)."""

from imgrec.train import main

if __name__ == "__main__":
    main()

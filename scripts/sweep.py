"""Optuna sweeps that answer a hyperparameter question: `python scripts/sweep.py sweep=cnn_kernel [overrides]`
(see conf/sweep/ and imgrec.sweep)."""

from imgrec.sweep import main

if __name__ == "__main__":
    main()

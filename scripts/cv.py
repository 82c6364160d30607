"""k-fold cross-validation of one training config: `python scripts/cv.py folds=5 [train overrides]`
(see imgrec.crossval)."""

from imgrec.crossval import main

if __name__ == "__main__":
    main()

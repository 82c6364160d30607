"""Evaluate a trained classifier on a dataset's test split: `python scripts/evaluate.py model=runs:/<id> data=<name>`
(see imgrec.evaluate)."""

from imgrec.evaluate import main

if __name__ == "__main__":
    main()

"""Explain a trained model's decisions: `python scripts/explain.py model=runs:/<id> metrics=true`
(see imgrec.explain.driver)."""

from imgrec.explain.driver import main

if __name__ == "__main__":
    main()

"""A leaderboard of MLflow runs, mean ± std over seeds per recipe: `python scripts/compare.py --help`
(see imgrec.compare)."""

from imgrec.compare import main

if __name__ == "__main__":
    main()

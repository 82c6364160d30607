"""`python scripts/predict.py ARGS` is `imgrec predict ARGS` (imgrec.verbs.predict), for older command lines."""

import sys

from imgrec.cli import main

main(["predict", *sys.argv[1:]])

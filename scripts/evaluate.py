"""`python scripts/evaluate.py ARGS` is `imgrec evaluate ARGS` (imgrec.verbs.evaluate), for older command lines."""

import sys

from imgrec.cli import main

main(["evaluate", *sys.argv[1:]])

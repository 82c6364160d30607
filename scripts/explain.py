"""`python scripts/explain.py ARGS` is `imgrec explain ARGS` (imgrec.verbs.explain), for older command lines."""

import sys

from imgrec.cli import main

main(["explain", *sys.argv[1:]])

"""`python scripts/sweep.py ARGS` is `imgrec sweep ARGS` (imgrec.verbs.sweep), for older command lines."""

import sys

from imgrec.cli import main

main(["sweep", *sys.argv[1:]])

"""`python scripts/corrupt.py ARGS` is `imgrec corrupt ARGS` (imgrec.verbs.corrupt), for older command lines."""

import sys

from imgrec.cli import main

main(["corrupt", *sys.argv[1:]])

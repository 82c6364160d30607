"""`python scripts/cv.py ARGS` is `imgrec cv ARGS` (imgrec.verbs.cv), for older command lines."""

import sys

from imgrec.cli import main

main(["cv", *sys.argv[1:]])

"""`python scripts/compare.py ARGS` is `imgrec compare ARGS` (imgrec.verbs.compare), for older command lines."""

import sys

from imgrec.cli import main

main(["compare", *sys.argv[1:]])

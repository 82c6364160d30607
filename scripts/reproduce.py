"""`python scripts/reproduce.py ARGS` is `imgrec reproduce ARGS` (imgrec.verbs.reproduce), for older command lines."""

import sys

from imgrec.cli import main

main(["reproduce", *sys.argv[1:]])

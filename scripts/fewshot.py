"""`python scripts/fewshot.py ARGS` is `imgrec fewshot ARGS` (imgrec.verbs.fewshot), for older command lines."""

import sys

from imgrec.cli import main

main(["fewshot", *sys.argv[1:]])

"""`python scripts/export.py ARGS` is `imgrec export ARGS` (imgrec.verbs.export), for older command lines."""

import sys

from imgrec.cli import main

main(["export", *sys.argv[1:]])

"""`python scripts/compress.py ARGS` is `imgrec compress ARGS` (imgrec.verbs.compress), for older command lines."""

import sys

from imgrec.cli import main

main(["compress", *sys.argv[1:]])

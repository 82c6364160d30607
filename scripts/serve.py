"""`python scripts/serve.py ARGS` is `imgrec serve ARGS` (imgrec.verbs.serve), for older command lines."""

import sys

from imgrec.cli import main

main(["serve", *sys.argv[1:]])

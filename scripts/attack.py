"""`python scripts/attack.py ARGS` is `imgrec attack ARGS` (imgrec.verbs.attack), for older command lines."""

import sys

from imgrec.cli import main

main(["attack", *sys.argv[1:]])

"""Published tables, reproduced: `python scripts/reproduce.py table=NAME [budget=paper|quick|smoke] [overrides]`.

Modules: driver (the table spec, reuse or training of each row x seed, the parent run), report (Markdown,
CSV and a PNG of ours beside theirs). Tables live in conf/table/, composed through conf/reproduce.yaml.
"""

from imgrec.tables.driver import main

__all__ = ["main"]

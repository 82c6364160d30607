"""Reproduce a published table: `python scripts/reproduce.py table=fashion_mnist [budget=quick]`
(see conf/table/ and imgrec.tables)."""

from imgrec.tables import main

if __name__ == "__main__":
    main()

"""Attack a trained model: `python scripts/attack.py model=runs:/<id> attack=pgd eps=[0,0.05,0.1]`
(see imgrec.robust.driver)."""

from imgrec.robust.driver import main

if __name__ == "__main__":
    main()

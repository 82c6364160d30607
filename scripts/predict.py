"""Predict image files with a trained model: `python scripts/predict.py model=runs:/<id> inputs=dir/`
(see imgrec.deploy.predict)."""

from imgrec.deploy.predict import main

if __name__ == "__main__":
    main()

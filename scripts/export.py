"""Export a trained model (ONNX, torch.export, int8) or register it in MLflow:
`python scripts/export.py model=runs:/<id> format=onnx` (see imgrec.deploy.export)."""

from imgrec.deploy.export import main

if __name__ == "__main__":
    main()

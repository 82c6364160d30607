"""Inference speed, memory, size and accuracy of a trained model per backend (eager fp32/bf16, torch.compile,
ONNX Runtime fp32/int8): `python scripts/bench_inference.py model=runs:/<id>` (see imgrec.deploy.bench)."""

from imgrec.deploy.bench import main

if __name__ == "__main__":
    main()

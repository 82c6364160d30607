"""From a trained model to a deployed one: read images, predict, export (ONNX, torch.export, int8), register
and serve through MLflow, benchmark inference. Every model comes through imgrec.hub.load_model: [0, 1] pixels in,
logits out."""

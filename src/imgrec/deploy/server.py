"""The HTTP server of `imgrec serve`: MLflow's scoring server (its FastAPI app, its protocol) on a model's pyfunc,
behind a guard that answers bad requests itself, each with a 4xx and one line, before the model sees them:

- a body above `max_body_mb` (Content-Length, or counted as it arrives): 413;
- /invocations with JSON that is not {"inputs": N x C x H x W numbers} of the model's image shape, an empty batch,
  strings, NaN or infinity, or values outside [0, 1] (refused, not clipped: a model trained on [0, 1] pixels
  answers anything else confidently and wrongly): 400 or 422.

Good requests go on to MLflow's app unchanged (the body is parsed twice: a millisecond for a batch of images).
The server answers the next request after any of these; uvicorn serves requests concurrently, the model's
forward passes run in MLflow's worker threads.
"""

import json
from collections.abc import Sequence

import numpy as np

CHECKED = "/invocations"


def refusal(status: int, message: str) -> tuple[int, bytes]:
    return status, json.dumps({"error_code": "BAD_REQUEST" if status < 500 else "INTERNAL_ERROR",
                               "message": message}).encode() + b"\n"


def check_inputs(body: bytes, in_shape: Sequence[int]) -> tuple[int, bytes] | None:
    """(status, JSON answer) for a request body the model must not see; None for a good one."""
    try:
        payload = json.loads(body)  # NaN and Infinity parse (as Python's json does): refused below
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        return refusal(400, f"the body is not JSON ({getattr(err, 'msg', err)})")
    if not isinstance(payload, dict) or "inputs" not in payload:
        got = (f"an object with {', '.join(map(str, payload))}" if payload else "an empty object") \
            if isinstance(payload, dict) else f"a {type(payload).__name__}"
        return refusal(400, f'expected {{"inputs": N x {" x ".join(map(str, in_shape))} numbers in [0, 1]}}, got {got}')
    try:
        images = np.asarray(payload["inputs"], dtype=np.float32)
    except (ValueError, TypeError):
        return refusal(400, "inputs: numbers expected (strings, nulls or ragged lists found)")
    if images.size == 0:
        return refusal(400, "inputs: an empty batch")
    if tuple(images.shape[1:]) != tuple(in_shape):
        return refusal(422, f"inputs: shape {' x '.join(map(str, images.shape))}; this model takes N x "
                            f"{' x '.join(map(str, in_shape))}")
    if not np.isfinite(images).all():
        return refusal(400, "inputs: NaN or infinity found")
    low, high = float(images.min()), float(images.max())
    if low < 0 or high > 1:
        return refusal(400, f"inputs: pixel values in [0, 1] expected, got values from {low:g} to {high:g}")
    return None


class RequestGuard:
    """ASGI middleware: the checks above in front of `app` (MLflow's scoring app)."""

    def __init__(self, app, in_shape: Sequence[int], max_body_mb: float = 10.0):
        self.app, self.in_shape, self.limit = app, tuple(in_shape), int(max_body_mb * 2**20)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await answer(send, *self.too_large(int(length)))
        body, more = b"", True
        while more:  # read it all (counted: a chunked body has no Content-Length)
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.limit:
                return await answer(send, *self.too_large(len(body)))
        content_type = dict(scope["headers"]).get(b"content-type", b"").split(b";")[0].strip()
        if scope["path"].rstrip("/") == CHECKED and content_type == b"application/json":
            refused = check_inputs(body, self.in_shape)
            if refused is not None:
                return await answer(send, *refused)
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)

    def too_large(self, size: int) -> tuple[int, bytes]:
        return refusal(413, f"the body is {size / 2**20:.1f} MB; this server takes at most "
                            f"{self.limit / 2**20:g} MB (serve max_body_mb=...): send fewer images per request")


async def answer(send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def image_shape(model) -> tuple[int, ...]:
    """The (C, H, W) a pyfunc model's signature declares (imgrec.deploy.pyfunc: a tensor of N x C x H x W)."""
    schema = model.metadata.get_input_schema()
    if schema is None or not schema.is_tensor_spec() or len(schema.inputs[0].shape) != 4:
        raise ValueError("the model's signature declares no N x C x H x W image input (not an imgrec classifier?)")
    return tuple(schema.inputs[0].shape[1:])


def app_for(model_uri: str, max_body_mb: float, precision: str = "auto"):
    """MLflow's scoring app on the model at `model_uri`, guarded; `precision` goes to imgrec.hub.load_model."""
    import mlflow.pyfunc
    from mlflow.pyfunc import scoring_server

    model = mlflow.pyfunc.load_model(model_uri, model_config={"precision": precision})
    return RequestGuard(scoring_server.init(model), image_shape(model), max_body_mb)


def serve(model_uri: str, host: str, port: int, max_body_mb: float, precision: str = "auto") -> None:
    import uvicorn

    uvicorn.run(app_for(model_uri, max_body_mb, precision), host=host, port=port, log_level="warning")


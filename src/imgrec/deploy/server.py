"""The HTTP server of `imgrec serve`: MLflow's scoring server (its FastAPI app, its protocol) on a model's pyfunc,
behind a guard that answers bad requests itself, each with a 4xx and one line, before the model sees them, and that
takes image files as well as pixels:

- a body above `max_body_mb` (Content-Length, or counted as it arrives): 413;
- /invocations with JSON that is not {"inputs": N x C x H x W numbers} of the model's image shape, an empty batch,
  strings, NaN or infinity, or values outside [0, 1] (the pyfunc's own check, imgrec.deploy.pyfunc.pixel_problem):
  400 or 422;
- /invocations with an image file as the body (Content-Type image/png, image/jpeg, ... or application/octet-stream),
  or JSON {"images": [base64 of a file, ...]}: files of any size and mode, decoded by the model's own preprocessing
  (imgrec.data.decode) into the pixels above; a body that is not an image Pillow can read: 400.

Good requests go on to MLflow's app (the body is parsed twice: a millisecond for a batch of images).
The server answers the next request after any of these; uvicorn serves requests concurrently, the model's
forward passes run in MLflow's worker threads.
"""

import base64
import binascii
import json
from collections.abc import Sequence

import numpy as np

from imgrec.data.decode import Preprocess, model_input
from imgrec.deploy.pyfunc import pixel_problem
from imgrec.errors import DataFileError

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
        return refusal(400, f'expected {{"inputs": N x {" x ".join(map(str, in_shape))} numbers in [0, 1]}} or '
                            f'{{"images": [base64 image files]}}, got {got}')
    try:
        images = np.asarray(payload["inputs"], dtype=np.float32)
    except (ValueError, TypeError):
        return refusal(400, "inputs: numbers expected (strings, nulls or ragged lists found)")
    problem = pixel_problem(images, in_shape)
    return None if problem is None else refusal(*problem)


def decoded_files(files: Sequence[bytes], preprocess: Preprocess) -> tuple[bytes | None, tuple[int, bytes] | None]:
    """(a JSON body of the files' pixels, None) or (None, the refusal of the first file that does not decode)."""
    images = []
    for number, data in enumerate(files, start=1):
        try:
            images.append(model_input(data, preprocess, f"image {number}").numpy())
        except DataFileError as err:
            return None, refusal(400, str(err))
    if not images:
        return None, refusal(400, "images: an empty list")
    return json.dumps({"inputs": np.stack(images).tolist()}).encode(), None


def file_bodies(body: bytes, content_type: bytes) -> list[bytes] | tuple[int, bytes] | None:
    """The image files a request carries (its body, or the base64 files of {"images": [...]}), a refusal, or None for
    a request of pixels."""
    if content_type.startswith(b"image/") or content_type == b"application/octet-stream":
        return [body]
    if content_type != b"application/json" or b'"images"' not in body:
        return None
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None  # check_inputs says what is wrong with it
    if not isinstance(payload, dict) or "images" not in payload or "inputs" in payload:
        return None
    files = payload["images"]
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        return refusal(400, "images: a list of base64-encoded image files expected")
    try:
        return [base64.b64decode(f, validate=True) for f in files]
    except (ValueError, binascii.Error):
        return refusal(400, "images: an entry is not base64")


class RequestGuard:
    """ASGI middleware: the checks above in front of `app` (MLflow's scoring app)."""

    def __init__(self, app, preprocess: Preprocess, max_body_mb: float = 10.0):
        self.app, self.preprocess, self.limit = app, preprocess, int(max_body_mb * 2**20)
        self.in_shape = preprocess.in_shape

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
        headers = dict(scope["headers"])
        content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if scope["path"].rstrip("/") == CHECKED:
            files = file_bodies(body, content_type)
            if isinstance(files, tuple):
                return await answer(send, *files)
            if files is not None:  # image files: their pixels go on, as JSON
                body, refused = decoded_files(files, self.preprocess)
                if refused is not None:
                    return await answer(send, *refused)
                headers[b"content-type"], headers[b"content-length"] = b"application/json", str(len(body)).encode()
                scope = {**scope, "headers": list(headers.items())}
            elif content_type == b"application/json":
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


def preprocess_of(model) -> Preprocess:
    """How the served imgrec classifier (imgrec.deploy.pyfunc.ImageClassifier) takes a raw image."""
    python_model = model.unwrap_python_model()
    if not hasattr(python_model, "model"):
        raise ValueError("the model is not an imgrec classifier (imgrec.deploy.pyfunc.ImageClassifier)")
    return python_model.model.preprocess


def app_for(model_uri: str, max_body_mb: float, precision: str = "auto"):
    """MLflow's scoring app on the model at `model_uri`, guarded; `precision` goes to imgrec.hub.load_model."""
    import mlflow.pyfunc
    from mlflow.pyfunc import scoring_server

    model = mlflow.pyfunc.load_model(model_uri, model_config={"precision": precision})
    return RequestGuard(scoring_server.init(model), preprocess_of(model), max_body_mb)


def serve(model_uri: str, host: str, port: int, max_body_mb: float, precision: str = "auto") -> None:
    import uvicorn

    uvicorn.run(app_for(model_uri, max_body_mb, precision), host=host, port=port, log_level="warning")


"""Images reach a model as training reads them, whatever the door (a file, request bytes, a PIL
image given to the Predictor); what has no answer (no images, an image without pixels, pixels
no 8-bit scale fits) is refused with one line; a client that leaves mid-request is counted."""

import asyncio
import io

import numpy as np
import pytest
from PIL import Image

from jaxvision import bundle
from jaxvision.data import files
from jaxvision.errors import UserError
from jaxvision.predictor import Predictor
from jaxvision.serving import app
from jaxvision.serving.images import BadImage, decode

# A 16-bit grayscale PNG's values, and what training makes of them: round(v / 257).
SIXTEEN_BITS = [0, 1000, 20000, 30000, 40000, 65535]
SCALED = [0, 4, 78, 117, 156, 255]


def _encoded(pixels: np.ndarray, kind: str = "PNG") -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, kind)
    return out.getvalue()


def test_a_16_bit_png_decodes_to_trainings_values_everywhere(tmp_path, digits_bundle):
    pixels = np.array([SIXTEEN_BITS], np.uint16)
    data = _encoded(pixels)
    (tmp_path / "wide.png").write_bytes(data)
    trained = files.load_image(str(tmp_path / "wide.png"), channels=1)
    assert trained.ravel().tolist() == SCALED
    served = decode(data, channels=1, max_pixels=100)  # was [0, 255, 255, 255, 255, 255]
    np.testing.assert_array_equal(served, trained)
    # The Predictor takes the PIL image and decodes it as training does.
    predictor = bundle.load(digits_bundle)
    with Image.open(io.BytesIO(data)) as image:
        np.testing.assert_array_equal(
            predictor.predict([image])["probs"], predictor.predict([trained])["probs"]
        )


def test_pixels_no_8_bit_scale_fits_are_refused(tmp_path):
    floats = _encoded(np.array([[0.0, 0.5, 1.0]], np.float32), "TIFF")
    with pytest.raises(BadImage) as raised:
        decode(floats, channels=1, max_pixels=100, name="f.tiff")
    assert raised.value.status == 415 and raised.value.message == (
        "f.tiff cannot be read: its pixels are 32-bit floats: save it with 8 or 16 bits per channel"
    )
    path = tmp_path / "wide.tiff"
    path.write_bytes(_encoded(np.array([[0, 70000, -3]], np.int32), "TIFF"))
    with pytest.raises(UserError) as raised:
        files.load_image(str(path), channels=1)
    assert str(raised.value) == (
        f"cannot decode image {path} (its pixels run from -3 to 70000, outside 16 bits: save it "
        "with 8 or 16 bits per channel): remove or replace the file"
    )


@pytest.mark.parametrize("shape", [(0, 5), (5, 0), (0, 0)])
def test_an_image_without_pixels_is_refused(digits_run, shape):
    predictor = Predictor.from_workdir(digits_run[0], max_batch=2)
    good = np.zeros((8, 8, 1), np.uint8)
    with pytest.raises(UserError) as raised:
        predictor.predict([good, np.zeros((*shape, 1), np.uint8)])
    assert str(raised.value) == (
        f"image 1 has no pixels ({shape[0]} x {shape[1]}, height x width): give images of at "
        "least 1 x 1"
    )
    with pytest.raises(UserError, match=r"^no images to predict: give one or more$"):
        predictor.predict([])
    with pytest.raises(UserError, match=r"^no images to predict"):
        predictor.predict(np.zeros((0, 8, 8, 1), np.uint8))


class _Echo:
    """A predictor that needs no model: probabilities from the images' first pixel."""

    image_size, record, class_names, kind = 4, {"channels": 1}, ["a", "b"], "classification"

    def buckets(self):
        return [1]

    def predict(self, images):
        return {"probs": np.array([[1.0, 0.0]] * len(images), np.float32)}


def _call(service, method: str, path: str, messages: list[dict], headers=()) -> list[dict]:
    """What the ASGI app `service` sends for one request whose body arrives as `messages`."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(k.encode(), v.encode()) for k, v in headers],
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 40000),
    }
    pending, sent = iter(messages), []

    async def receive():
        return next(pending)

    async def send(message):
        sent.append(message)

    asyncio.run(service(scope, receive, send))
    return sent


def test_a_client_that_leaves_mid_body_is_counted_not_a_traceback():
    service = app.create_app(_Echo(), {}, app.Limits())
    headers = [("content-type", "multipart/form-data; boundary=x"), ("content-length", "5000")]
    first = {
        "type": "http.request",
        "body": b"--x\r\nContent-Disposition: form-",
        "more_body": True,
    }
    # Before: starlette's ClientDisconnect escaped the app (uvicorn logs its traceback).
    _call(service, "POST", "/v1/predict", [first, {"type": "http.disconnect"}], headers)
    sent = _call(service, "GET", "/metrics", [{"type": "http.request", "body": b""}])
    metrics = b"".join(m.get("body", b"") for m in sent).decode()
    labels = 'endpoint="predict",model="model",status="499",version="1"'
    assert f"jaxvision_requests_total{{{labels}}} 1.0" in metrics.splitlines()

"""Real faces that packages ship, and the variants the tests and `make bench` make of them.

scikit-image's astronaut (Eileen Collins, NASA, public domain), its camera man (turned three
quarters: dlib's HOG finds no face there) and matplotlib's Grace Hopper (public domain); the photos
without a face are scikit-image's other samples. Both packages are in
the `dev` extra: this module is for the tests and the benchmark, never imported by the service.
"""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, ImageEnhance, ImageFilter, ImageOps

# Where each person's face sits in their photo (x, y, w, h as dlib's HOG boxes it), for scaling.
FACE_SIDE = {"astronaut": 91, "hopper": 187, "cameraman": 69}
# A head-and-shoulders crop of each, for group photos.
HEAD_CROP = {
    "astronaut": (120, 20, 340, 260),
    "hopper": (90, 40, 480, 460),
    "cameraman": (140, 50, 330, 260),
}
NO_FACE_SAMPLES = ("coffee", "chelsea", "rocket", "coins", "horse", "brick", "moon", "page")


def real_faces() -> dict[str, Image.Image]:
    import matplotlib
    from skimage import data

    hopper = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    with Image.open(hopper) as image:
        astronaut = data.astronaut()  # type: ignore[no-untyped-call]
        cameraman = data.camera()  # type: ignore[no-untyped-call]
        return {
            "astronaut": Image.fromarray(astronaut),
            "hopper": image.convert("RGB"),
            "cameraman": Image.fromarray(cameraman).convert("RGB"),
        }


def no_face_photos() -> dict[str, Image.Image]:
    from skimage import data

    return {name: Image.fromarray(getattr(data, name)()).convert("RGB") for name in NO_FACE_SAMPLES}


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    with Image.open(io.BytesIO(buffer.getvalue())) as decoded:
        return decoded.convert("RGB")


def in_a_scene(image: Image.Image) -> Image.Image:
    """The photo pasted at its own size into a 1600x1200 scene without a face (scikit-image's
    coffee), low and to the right: at FACE_DETECT_SIDE 1024 its face is 0.64 of its size."""
    from skimage import data

    scene = Image.fromarray(data.coffee()).convert("RGB").resize((1600, 1200))  # type: ignore[no-untyped-call]
    scene.paste(image, (900, 500))
    return scene


def variants(image: Image.Image, face_side: int) -> dict[str, Image.Image]:
    """Rotations of +-10 and +-20 degrees, a mirror image, JPEG quality 30, dim, bright and
    flat lighting, a blur, the photo in a larger scene, and the whole photo scaled so that the
    face is 40, 50 and 60 px wide."""
    out = {
        f"rotate{angle:+d}": image.rotate(
            angle, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=(128, 128, 128)
        )
        for angle in (-20, -10, 10, 20)
    }
    out["mirror"] = ImageOps.mirror(image)
    out["jpeg-q30"] = _jpeg(image, 30)
    out["dim"] = ImageEnhance.Brightness(image).enhance(0.45)
    out["bright"] = ImageEnhance.Brightness(image).enhance(1.5)
    out["flat"] = ImageEnhance.Contrast(image).enhance(0.5)
    out["blurred"] = image.filter(ImageFilter.GaussianBlur(2))
    out["in-a-scene"] = in_a_scene(image)
    for side in (40, 50, 60):
        scale = side / face_side
        size = (round(image.width * scale), round(image.height * scale))
        out[f"face-{side}px"] = image.resize(size, Image.Resampling.LANCZOS)
    return out


def group_photo(people: list[str], faces: dict[str, Image.Image], height: int = 420) -> Image.Image:
    """The people's heads side by side on one grey canvas, each `height` px tall."""
    heads = []
    for name in people:
        head = faces[name].crop(HEAD_CROP[name])
        heads.append(head.resize((round(head.width * height / head.height), height)))
    canvas = Image.new(
        "RGB", (sum(h.width for h in heads) + 40 * (len(heads) + 1), height + 80), (120, 124, 128)
    )
    x = 40
    for head in heads:
        canvas.paste(head, (x, 40))
        x += head.width + 40
    return canvas

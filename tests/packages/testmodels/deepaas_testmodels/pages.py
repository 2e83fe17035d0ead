"""A model answering with documents a browser would run: an HTML page or an
SVG image it makes, or the file it was sent, as the type asked for."""

from webargs import fields, validate

PAGE = b"<html><body><script>document.title = 'ran'</script></body></html>"
SVG = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'


def get_predict_args():
    return {
        "upload": fields.Field(type="file", location="form", required=False),
        "accept": fields.Str(
            load_default="text/html",
            validate=validate.OneOf(
                ["text/html", "image/svg+xml", "text/plain", "image/png"]
            ),
        ),
    }


def predict(upload=None, accept="text/html"):
    if upload is not None:
        return open(upload.filename, "rb")
    if accept == "image/svg+xml":
        return SVG
    if accept == "text/plain":
        return "plain words"
    return PAGE

"""deepaas-predict: one prediction on a local file or a URL, written to a
directory (upstream DEEPaaS's third command, kept for its command lines).

    deepaas-predict -i INPUT -o DIR [-ct CONTENT_TYPE] [-u] [--model-name NAME]

The input goes to the model's one file argument (with ``--url``, to its one
URL argument); ``--content-type`` is its ``accept`` argument. The call runs in
a spawned worker, as under the server and deepaas-cli. A JSON result is
written to ``DIR/out_<input name>.json``, anything else to
``DIR/out_<input name><extension>`` (a returned file's own extension, else the
content type's). deepaas-cli does all this and more, with every argument.

Exit status: as deepaas-cli's.
"""

from __future__ import annotations

import argparse
import json
import mimetypes
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

from marshmallow import fields

from deepaas import __version__, config
from deepaas.cmd import calls
from deepaas.cmd.cli import configure_logging
from deepaas.model.v2.arguments import Arguments
from deepaas.model.v2.declaration import ModelDeclaration
from deepaas.model.v2.encoding import JSON_MEDIA_TYPES, jsonable
from deepaas.model.v2.types import ReturnedFile

PROG = "deepaas-predict"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Make one prediction on a local file (or a URL) and write "
        "the result to a directory.",
        allow_abbrev=False,
    )
    parser.add_argument(
        "-i", "--input-file", required=True, metavar="INPUT", help="file to predict"
    )
    parser.add_argument(
        "-ct",
        "--content-type",
        default="application/json",
        help="media type of the result, one of the model's accept choices "
        "(default: application/json)",
    )
    parser.add_argument(
        "-o", "--output", required=True, metavar="DIR", help="directory to write to"
    )
    parser.add_argument(
        "-u",
        "--url",
        action="store_true",
        help="the input is a URL, for the model's URL argument",
    )
    parser.add_argument("--nourl", dest="url", action="store_false")
    parser.add_argument(
        "--model-name",
        default=os.environ.get(config.MODEL_NAME_ENV) or None,
        help="model entry point to use (default: $DEEPAAS_V2_MODEL, or the only "
        "model installed)",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--version", action="version", version=__version__)
    return parser


def the_argument(arguments: Arguments, url: bool) -> str:
    """The name of the one argument that takes the input."""
    if url:
        names = [n for n, f in arguments.fields.items() if isinstance(f, fields.Url)]
        what = "URL"
    else:
        names = sorted(arguments.file_names)
        what = "file"
    if len(names) != 1:
        found = ", ".join(names) if names else "none"
        raise calls.UsageError(
            f"deepaas-predict needs a model with exactly one {what} argument "
            f"(this one has: {found}); use deepaas-cli to name the arguments."
        )
    return names[0]


def prediction_arguments(
    arguments: Arguments, options: argparse.Namespace, workdir: str
) -> dict[str, Any]:
    """The model's keyword arguments for the options, validated."""
    name = the_argument(arguments, options.url)
    raw: dict[str, Any] = {
        name: options.input_file
        if options.url
        else calls.uploaded_copy(name, options.input_file, workdir)
    }
    if "accept" in arguments:
        raw["accept"] = options.content_type
    elif options.content_type not in JSON_MEDIA_TYPES:
        raise calls.UsageError(
            f"The model answers only JSON: --content-type {options.content_type} "
            "cannot be produced."
        )
    return arguments.load(raw)


def save(result: Any, options: argparse.Namespace) -> str:
    """Write ``result`` into the output directory; the path written."""
    os.makedirs(options.output, exist_ok=True)
    stem = os.path.splitext(os.path.basename(options.input_file.rstrip("/")))[0]
    stem = "out_" + (stem or "prediction")
    if isinstance(result, ReturnedFile):
        extension = os.path.splitext(result.filename)[1]
        path = os.path.join(options.output, stem + extension)
        shutil.copyfile(result.filename, path)
    elif isinstance(result, bytes | bytearray | str) and (
        options.content_type not in JSON_MEDIA_TYPES
    ):
        extension = mimetypes.guess_extension(options.content_type) or ".out"
        path = os.path.join(options.output, stem + extension)
        data = result.encode() if isinstance(result, str) else bytes(result)
        with open(path, "wb") as f:
            f.write(data)
    else:
        path = os.path.join(options.output, stem + ".json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(jsonable(result), f, indent=2, ensure_ascii=False)
            f.write("\n")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    options = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    configure_logging(options.debug)
    workdir = tempfile.mkdtemp(prefix="deepaas-predict-")
    try:
        spec, model = calls.choose_model(options.model_name)
        declaration = ModelDeclaration.read(spec, model)
        kwargs = prediction_arguments(declaration.predict_arguments, options, workdir)
        result = calls.run(spec, model, "predict", kwargs)
        print(f"Output saved at {save(result, options)}")
        return calls.EXIT_OK
    except calls.REPORTED as exc:
        return calls.report(PROG, "predict()", exc, debug=options.debug)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

"""deepaas-cli: a model's functions from the command line, with no server.

    deepaas-cli [--model-name NAME] <get_metadata|warm|predict|train> [--<arg> V ...]

The options of ``predict`` and ``train`` are built from the model's declared
arguments and validated by the same schema as the HTTP API. Calls run in a
spawned worker process (as under the server) unless
``--nodeepaas_with_multiprocessing`` is given.

Exit status: 0 success, 2 bad arguments, 1 the model raised, 3 the worker died,
130 interrupted (Ctrl-C, also while the model loads or warms up).
"""

from __future__ import annotations

import argparse
import ast
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from typing import Any, BinaryIO

from marshmallow import fields

from deepaas import __version__, config, exceptions
from deepaas.cmd import calls
from deepaas.model import loading
from deepaas.model.v2.arguments import Arguments, choices_of, is_file_field
from deepaas.model.v2.declaration import ModelDeclaration
from deepaas.model.v2.encoding import jsonable
from deepaas.model.v2.types import ReturnedFile

LITERAL_FIELDS = (fields.List, fields.Dict, fields.Tuple, fields.Nested, fields.Mapping)


def _type_name(field: fields.Field) -> str:
    if isinstance(field, fields.Bool):
        return "bool (true/false/yes/no/1/0)"
    if isinstance(field, LITERAL_FIELDS):
        return f'{type(field).__name__.lower()} literal, e.g. "[1, 2]"'
    if is_file_field(field):
        return "path of a local file"
    return type(field).__name__.lower()


def _help(field: fields.Field) -> str:
    description = str(field.metadata.get("description") or "").strip()
    if description and not description.endswith((".", "!", "?")):
        description += "."
    parts = [description]
    parts.append(f"Type: {_type_name(field)}.")
    choices = choices_of(field)
    if choices:
        parts.append(f"Choices: {', '.join(map(str, choices))}.")
    if field.required:
        parts.append("Required.")
    elif field.load_default is not None and not callable(field.load_default):
        parts.append(f"Default: {field.load_default!r}.")
    return " ".join(p for p in parts if p).replace("%", "%%")


def add_argument_options(parser: argparse.ArgumentParser, arguments: Arguments) -> None:
    """One ``--<name>`` option per declared argument; values stay strings so
    that the model's own schema converts and validates them."""
    for name, field in arguments.fields.items():
        parser.add_argument(
            f"--{name}",
            dest=f"arg:{name}",
            metavar=name.upper(),
            help=_help(field),
            default=argparse.SUPPRESS,
        )


def collect_arguments(
    namespace: argparse.Namespace, arguments: Arguments, workdir: str
) -> dict[str, Any]:
    """The raw values given on the command line, files copied to ``workdir``."""
    raw = {
        key[len("arg:") :]: value
        for key, value in vars(namespace).items()
        if key.startswith("arg:")
    }
    data: dict[str, Any] = {}
    errors: dict[str, list[str]] = {}
    for name, value in raw.items():
        field = arguments.fields[name]
        if name in arguments.file_names:
            try:
                data[name] = calls.uploaded_copy(name, value, workdir)
            except exceptions.InvalidArguments as exc:
                errors.update(exc.errors)
        elif isinstance(field, LITERAL_FIELDS):
            try:
                data[name] = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                errors[name] = [f"Not a Python/JSON literal: {value}"]
        else:
            data[name] = value
    if errors:
        raise exceptions.InvalidArguments(errors)
    return data


def build_parser(declaration: ModelDeclaration | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deepaas-cli",
        description="Run a model's functions from the command line.",
        allow_abbrev=False,
    )
    add_global_options(parser)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    # The global options are taken after the command too.
    add_global_options(
        commands.add_parser("get_metadata", help="print the model's metadata"),
        after_command=True,
    )
    add_global_options(
        commands.add_parser("warm", help="load and warm the model"),
        after_command=True,
    )
    for method in ("predict", "train"):
        sub = commands.add_parser(
            method, help=f"run the model's {method}()", allow_abbrev=False
        )
        add_global_options(sub, after_command=True)
        sub.add_argument(
            "--deepaas_method_output",
            metavar="FILE",
            help="write the result to FILE instead of standard output",
        )
        if declaration is not None:
            add_argument_options(
                sub,
                declaration.predict_arguments
                if method == "predict"
                else declaration.train_arguments,
            )
    return parser


def add_global_options(
    parser: argparse.ArgumentParser, *, after_command: bool = False
) -> None:
    """The options of every command; ``after_command``: a command's own copy,
    which leaves what was given before the command as it is."""

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if after_command else value

    parser.add_argument(
        "--model-name",
        default=default(os.environ.get(config.MODEL_NAME_ENV) or None),
        help="model entry point to use (default: $DEEPAAS_V2_MODEL, or the only "
        "model installed)",
    )
    parser.add_argument(
        "--deepaas_with_multiprocessing",
        type=_parse_bool,
        default=default(True),
        metavar="BOOL",
        help="run the call in a spawned worker process (default: true)",
    )
    parser.add_argument(
        "--nodeepaas_with_multiprocessing",
        dest="deepaas_with_multiprocessing",
        action="store_false",
        default=default(True),
        help="run the call in this process, for debugging",
    )
    parser.add_argument(
        "--debug", action="store_true", default=default(False), help="show tracebacks"
    )
    if not after_command:
        parser.add_argument("--version", action="version", version=__version__)


def _parse_bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise argparse.ArgumentTypeError(f"not a boolean: {value}")


def write_result(result: Any, output: str | None) -> None:
    """Print ``result`` as JSON, or write it (raw for files and bytes)."""
    if isinstance(result, ReturnedFile | bytes | bytearray):
        if output is None and sys.stdout.isatty():
            raise calls.UsageError(
                "The result is binary; write it to a file with "
                "--deepaas_method_output FILE (or redirect standard output)."
            )
        target: BinaryIO
        with (
            open(output, "wb")
            if output
            else os.fdopen(os.dup(sys.stdout.fileno()), "wb") as target
        ):
            if isinstance(result, ReturnedFile):
                with open(result.filename, "rb") as source:
                    shutil.copyfileobj(source, target)
            else:
                target.write(result)
        return
    text = json.dumps(jsonable(result), indent=2, sort_keys=True, ensure_ascii=False)
    if output:
        with open(output, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    else:
        print(text)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(list(sys.argv[1:] if argv is None else argv))
    except KeyboardInterrupt as exc:  # loading the model, before a call
        return calls.report("deepaas-cli", "loading", exc, debug=False)
    except BrokenPipeError:
        # The reader of standard output went away (e.g. "| head"): stop quietly,
        # and keep the interpreter from complaining while it flushes at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return calls.EXIT_MODEL_ERROR


def _main(argv: list[str]) -> int:
    early = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    add_global_options(early)
    known, _ = early.parse_known_args(argv)
    configure_logging(known.debug)
    try:
        spec, model = calls.choose_model(known.model_name)
        declaration = ModelDeclaration.read(spec, model)
    except (calls.UsageError, exceptions.ModelLoadError) as exc:
        return calls.report("deepaas-cli", "loading", exc, debug=known.debug)
    args = build_parser(declaration).parse_args(argv)
    if args.command == "get_metadata":
        write_result(declaration.metadata, None)
        return calls.EXIT_OK
    return run_command(args, spec, model, declaration, known.debug)


def configure_logging(debug: bool) -> None:
    """Warnings only (everything with ``debug``), on standard error."""
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not debug:
        # The command reports a failed call itself, once, with its exit status.
        for name in ("deepaas.runtime.pool", "deepaas.runtime.local"):
            logging.getLogger(name).setLevel(logging.CRITICAL)


def run_command(
    args: argparse.Namespace,
    spec: loading.ModelSpec,
    model: Any,
    declaration: ModelDeclaration,
    debug: bool,
) -> int:
    method = None if args.command == "warm" else args.command
    workdir = tempfile.mkdtemp(prefix="deepaas-cli-")
    try:
        kwargs: dict[str, Any] = {}
        if method is not None:
            arguments = getattr(declaration, f"{method}_arguments")
            kwargs = arguments.load(collect_arguments(args, arguments, workdir))
        result = calls.run(
            spec, model, method, kwargs, in_worker=args.deepaas_with_multiprocessing
        )
        if method is None:
            write_result({"status": "warmed", "model": spec.name}, None)
        else:
            write_result(result, args.deepaas_method_output)
        return calls.EXIT_OK
    except calls.REPORTED as exc:
        return calls.report("deepaas-cli", f"{args.command}()", exc, debug=debug)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

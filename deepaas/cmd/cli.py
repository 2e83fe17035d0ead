"""deepaas-cli: a model's functions from the command line, with no server.

    deepaas-cli [--model-name NAME] <get_metadata|warm|predict|train> [--<arg> V ...]

The options of ``predict`` and ``train`` are built from the model's declared
arguments and validated by the same schema as the HTTP API. Calls run in a
spawned worker process (as under the server) unless
``--nodeepaas_with_multiprocessing`` is given.

Exit status: 0 success, 2 bad arguments, 1 the model raised, 3 the worker died.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import json
import logging
import mimetypes
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from typing import Any, BinaryIO

from marshmallow import fields

from deepaas import __version__, config, exceptions
from deepaas.model import loading
from deepaas.model.v2.arguments import Arguments, choices_of, is_file_field
from deepaas.model.v2.declaration import ModelDeclaration
from deepaas.model.v2.encoding import jsonable
from deepaas.model.v2.pool import LocalExecutor
from deepaas.model.v2.protocol import Answer, Call
from deepaas.model.v2.types import ReturnedFile, UploadedFile
from deepaas.model.v2.worker import LoadedModel

EXIT_OK, EXIT_MODEL_ERROR, EXIT_BAD_ARGUMENTS, EXIT_WORKER_DIED = 0, 1, 2, 3
LOG = logging.getLogger("deepaas.cmd.cli")
LITERAL_FIELDS = (fields.List, fields.Dict, fields.Tuple, fields.Nested, fields.Mapping)


class UsageError(Exception):
    """A mistake on the command line, reported with exit status 2."""


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
            if not os.path.isfile(value):
                errors[name] = [f"No such file: {value}"]
                continue
            copy = os.path.join(workdir, f"{name}-{os.path.basename(value)}")
            shutil.copyfile(value, copy)
            content_type = mimetypes.guess_type(value)[0] or "application/octet-stream"
            data[name] = UploadedFile(name, copy, content_type, os.path.basename(value))
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
    commands.add_parser("get_metadata", help="print the model's metadata")
    commands.add_parser("warm", help="load and warm the model")
    for method in ("predict", "train"):
        sub = commands.add_parser(
            method, help=f"run the model's {method}()", allow_abbrev=False
        )
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


def add_global_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model-name",
        default=os.environ.get(config.MODEL_NAME_ENV) or None,
        help="model entry point to use (default: $DEEPAAS_V2_MODEL, or the only "
        "model installed)",
    )
    parser.add_argument(
        "--deepaas_with_multiprocessing",
        type=_parse_bool,
        default=True,
        metavar="BOOL",
        help="run the call in a spawned worker process (default: true)",
    )
    parser.add_argument(
        "--nodeepaas_with_multiprocessing",
        dest="deepaas_with_multiprocessing",
        action="store_false",
        help="run the call in this process, for debugging",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--version", action="version", version=__version__)


def _parse_bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise argparse.ArgumentTypeError(f"not a boolean: {value}")


def choose_model(model_name: str | None) -> tuple[loading.ModelSpec, Any]:
    """The one model to run; several installed and none chosen is an error."""
    if not model_name:
        installed = loading.installed_names()
        if len(installed) > 1:
            raise UsageError(
                "Several models are installed; choose one with --model-name or "
                f"DEEPAAS_V2_MODEL: {', '.join(installed)}."
            )
    models = loading.load_models(model_name)
    return next(iter(models.values()))


async def run_in_worker(
    spec: loading.ModelSpec, method: str | None, kwargs: dict[str, Any]
) -> Any:
    """Warm the model in a spawned worker (as the server does), then call it."""
    executor = LocalExecutor(spec, 1, warm=True)
    await executor.start()
    try:
        return None if method is None else await executor.call(method, kwargs)
    finally:
        await executor.stop()


def run_in_process(
    spec: loading.ModelSpec, model: Any, method: str | None, kwargs: dict[str, Any]
) -> Any:
    """Warm the model and call it right here, as a worker would."""
    loaded = LoadedModel(spec.name, model, warm=True)
    if method is None:
        return None
    reply = loaded.run(Call(method, kwargs))
    if isinstance(reply, Answer):
        return reply.value
    raise reply.error.to_exception()


def write_result(result: Any, output: str | None) -> None:
    """Print ``result`` as JSON, or write it (raw for files and bytes)."""
    if isinstance(result, ReturnedFile | bytes | bytearray):
        if output is None and sys.stdout.isatty():
            raise UsageError(
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
    except BrokenPipeError:
        # The reader of standard output went away (e.g. "| head"): stop quietly,
        # and keep the interpreter from complaining while it flushes at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_MODEL_ERROR


def _main(argv: list[str]) -> int:
    early = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    add_global_options(early)
    known, _ = early.parse_known_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if known.debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not known.debug:
        # The CLI reports a failed call itself, once, with its exit status.
        logging.getLogger("deepaas.model.v2.pool").setLevel(logging.CRITICAL)
    try:
        spec, model = choose_model(known.model_name)
        declaration = ModelDeclaration.read(spec, model)
    except (UsageError, exceptions.ModelLoadError) as exc:
        print(f"deepaas-cli: {exc}", file=sys.stderr)
        return EXIT_BAD_ARGUMENTS if isinstance(exc, UsageError) else EXIT_MODEL_ERROR
    args = build_parser(declaration).parse_args(argv)
    if args.command == "get_metadata":
        write_result(declaration.metadata, None)
        return EXIT_OK
    return run_command(args, spec, model, declaration, known.debug)


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
        if args.deepaas_with_multiprocessing:
            result = asyncio.run(run_in_worker(spec, method, kwargs))
        else:
            result = run_in_process(spec, model, method, kwargs)
        if method is None:
            write_result({"status": "warmed", "model": spec.name}, None)
        else:
            write_result(result, args.deepaas_method_output)
        return EXIT_OK
    except exceptions.InvalidArguments as exc:
        for field, messages in sorted(exc.errors.items()):
            text = (
                messages if isinstance(messages, str) else " ".join(map(str, messages))
            )
            print(f"deepaas-cli: --{field}: {text}", file=sys.stderr)
        return EXIT_BAD_ARGUMENTS
    except UsageError as exc:
        print(f"deepaas-cli: {exc}", file=sys.stderr)
        return EXIT_BAD_ARGUMENTS
    except exceptions.WorkerDied as exc:
        print(f"deepaas-cli: {exc.message}", file=sys.stderr)
        return EXIT_WORKER_DIED
    except exceptions.ModelCallError as exc:
        if debug and exc.traceback:
            print(exc.traceback, file=sys.stderr, end="")
        print(f"deepaas-cli: {args.command}() failed: {exc.message}", file=sys.stderr)
        return EXIT_MODEL_ERROR
    except exceptions.ModelLoadError as exc:
        print(f"deepaas-cli: {exc.message}", file=sys.stderr)
        return EXIT_MODEL_ERROR
    except KeyboardInterrupt:
        print("deepaas-cli: interrupted", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

"""deepaas-api-key: make a new API key and its line for --api-keys-file."""

from __future__ import annotations

import argparse
import secrets
import sys
from collections.abc import Sequence

from deepaas import exceptions
from deepaas.api import auth

KEY_BYTES = 32


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="deepaas-api-key",
        description="Make a new random API key. The key goes to its user; the "
        "line (which holds only the key's SHA-256) goes in the file given to "
        "deepaas-run --api-keys-file.",
    )
    parser.add_argument(
        "roles", help=f"comma-separated roles among {', '.join(auth.ROLES)}"
    )
    parser.add_argument(
        "name", nargs="?", default="", help="who holds the key (owns its trainings)"
    )
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    key = secrets.token_urlsafe(KEY_BYTES)
    line = f"{auth.hash_key(key)} {args.roles} {args.name}".rstrip()
    try:
        auth.parse_keys(line, "the new line")
    except exceptions.ConfigurationError as exc:
        print(f"deepaas-api-key: {exc.message}", file=sys.stderr)
        return 2
    print(f"key:  {key}")
    print(f"line: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

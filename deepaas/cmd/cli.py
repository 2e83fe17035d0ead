"""deepaas-cli: run a model's functions from the command line."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    print("deepaas-cli is not available yet.", file=sys.stderr)
    return 2

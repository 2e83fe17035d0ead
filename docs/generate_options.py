"""Write the option reference, docs/options.md, from deepaas/config/.

    python docs/generate_options.py            # writes docs/options.md
    python docs/generate_options.py --check    # exit 1 if the page is stale

The page is made from the options' own declarations (name, short and old
names, default, choices, help text), concern by concern, so that it cannot
say anything the options do not; tests/test_docs.py fails when it is stale.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from oslo_config import cfg

from deepaas import config

PAGE = Path(__file__).with_name("options.md")
MIB = 1024 * 1024

INTRO = """\
# Options

Every option of `deepaas-run` works on the command line (`--name value`) and in
a configuration file given with `--config-file` (`name = value` under
`[DEFAULT]`; `etc/deepaas.conf.sample` lists them all). On the command line the
options are one flat list, as upstream DEEPaaS has them; here they are grouped
by what they are about, as the server reads them (`deepaas/settings.py`). A
boolean option `--name` is turned off with `--noname`.

A disabled endpoint is absent from the routes and from the spec. Every path
answers with or without its trailing slash, and HEAD wherever GET does; repeated
slashes (`//v2//models/`) are a 308 to the clean path.

This page is generated from `deepaas/config/` by `docs/generate_options.py`.
"""


def names(opt: cfg.Opt) -> str:
    """``--name``, ``--[no]name`` for a boolean, with its short and old names."""
    shown = f"`--[no]{opt.name}`" if isinstance(opt, cfg.BoolOpt) else f"`--{opt.name}`"
    if opt.short:
        shown += f", `-{opt.short}`"
    old = sorted({d.name.replace("_", "-") for d in opt.deprecated_opts} - {opt.name})
    if old:
        shown += " (formerly " + ", ".join(f"`--{name}`" for name in old) + ")"
    return shown


def default(opt: cfg.Opt) -> str:
    """The default as a reader would write it."""
    if opt.sample_default is not None:
        return f"`{opt.sample_default}`"
    value: Any = opt.default
    if value is None or value in ("", [], {}):
        return "(none)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) and value >= MIB and value % MIB == 0:
        return f"{value // MIB} MiB"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, list):
        value = ",".join(str(v) for v in value)
    return f"`{value}`"


def meaning(opt: cfg.Opt) -> str:
    """The help text, with its choices, fit for a table cell."""
    text = " ".join(str(opt.help).split())
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    choices = getattr(opt.type, "choices", None)
    if choices:
        text += " One of: " + ", ".join(f"`{choice}`" for choice in choices) + "."
    return text.replace("|", "\\|")


def page() -> str:
    """The whole page."""
    parts = [INTRO]
    for concern in config.CONCERNS:
        parts.append(f"\n## {concern.title}\n\n{concern.summary}\n\n")
        parts.append("| option | default | meaning |\n|---|---|---|\n")
        for opt in concern.opts:
            parts.append(f"| {names(opt)} | {default(opt)} | {meaning(opt)} |\n")
    return "".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the page is stale"
    )
    options = parser.parse_args(argv)
    text = page()
    if options.check:
        if PAGE.read_text() != text:
            print(f"{PAGE} is stale: run python {__file__}", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

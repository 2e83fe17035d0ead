"""What authentication costs per request: predict with it off, with an API
key, and with an OIDC token, side by side on this machine.

Each round starts our server three times in turn (off, api-key, oidc; same
model, same workers) and measures predict requests/s at concurrency 32 and
p50 latency at concurrency 1, every request carrying the side's credentials.
The OIDC token is RS256, signed by a key made here; the server reads the
issuer's keys from a JWKS file. Medians over rounds and the ratio to "off"
are printed. Every load is bounded in time; nothing leaves loopback.

    python benchmarks/auth_cost.py
    python benchmarks/auth_cost.py --quick --client aiohttp
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import jwt
from common import drive, start_server, wrk_load
from compare import install_model
from cryptography.hazmat.primitives.asymmetric import rsa

API_KEY = "bench-key-0123456789abcdefghij"
ISSUER = "https://issuer.example/realms/bench"


def oidc_files(root: Path) -> tuple[Path, str]:
    """A JWKS file with a new RSA key, and a token signed with it."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.get_algorithm_by_name("RS256").to_jwk(key.public_key()))
    jwks = root / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{**jwk, "kid": "bench", "alg": "RS256"}]}))
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": "deepaas", "sub": "bench", "iat": now,
              "exp": now + 86400, "groups": ["predict"]}  # fmt: skip
    token = jwt.encode(claims, key, algorithm="RS256", headers={"kid": "bench"})
    return jwks, token


def check_costs(keys: Path, jwks: Path, token: str) -> dict[str, float]:
    """Microseconds one credentials check takes in the server's code, alone:
    an API key, a token seen before (cached), a token's first use (its
    RS256 signature checked)."""
    from aiohttp.test_utils import make_mocked_request

    from deepaas.api.auth import OIDC, APIKeys, Authenticator

    oidc = OIDC(
        ISSUER,
        audience="deepaas",
        jwks=str(jwks),
        role_map={"predict": frozenset({"predict"})},
    )
    authenticator = Authenticator(APIKeys(str(keys)), oidc)
    key_request = make_mocked_request(
        "POST", "/", headers={"Authorization": f"Bearer {API_KEY}"}
    )
    token_request = make_mocked_request(
        "POST", "/", headers={"Authorization": f"Bearer {token}"}
    )

    async def timed(call, count: int = 2000) -> float:
        await call()
        started = time.perf_counter()
        for _ in range(count):
            await call()
        return (time.perf_counter() - started) / count * 1e6

    async def run() -> dict[str, float]:
        return {
            "api-key": await timed(lambda: authenticator.principal(key_request)),
            "oidc, token seen before": await timed(
                lambda: authenticator.principal(token_request)
            ),
            "oidc, first use of a token": await timed(lambda: oidc._verify(token)),
        }

    return asyncio.run(run())


def measure(
    args: argparse.Namespace,
    env: dict[str, str],
    options: list[str],
    headers: dict[str, str],
) -> dict[str, float]:
    server, base = start_server(
        ["--model-name", "bench", "--workers", str(args.workers), "--noaccess-log",
         *options],
        env=env,
    )  # fmt: skip
    try:
        predict = f"{base}/v2/models/bench/predict/?text=hello"
        warm = asyncio.run(drive("POST", predict, 200, 8, 10, headers))
        if warm["non_200"]:
            raise SystemExit(f"{options}: {warm['non_200']} answers were not 200")
        if args.client == "wrk":
            rps = wrk_load(
                "POST", predict, 32, args.seconds, args.scratch, headers=headers
            )[0]
            p50 = wrk_load(
                "POST", predict, 1, args.seconds, args.scratch, headers=headers
            )[1]
        else:
            rps = asyncio.run(drive("POST", predict, 20000, 32, args.seconds, headers))[
                "rps"
            ]
            p50 = asyncio.run(drive("POST", predict, 5000, 1, args.seconds, headers))[
                "p50_ms"
            ]
    finally:
        server.terminate()
        server.wait(timeout=60)
    return {"predict c=32 (req/s)": rps, "predict c=1 p50 (ms)": p50}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=5, help="per load")
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    parser.add_argument(
        "--client",
        choices=["wrk", "aiohttp"],
        default="wrk" if shutil.which("wrk") else "aiohttp",
    )
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.seconds = 1, 1

    with tempfile.TemporaryDirectory(prefix="deepaas-auth-") as scratch:
        args.scratch = scratch
        root = Path(scratch)
        install_model(root / "site")
        keys = root / "api-keys"
        keys.write_text(f"{API_KEY} predict bench\n")
        jwks, token = oidc_files(root)
        costs = check_costs(keys, jwks, token)
        env = {**os.environ, "PYTHONPATH": str(root / "site"), "TMPDIR": scratch}
        env.pop("DEEPAAS_V2_MODEL", None)
        sides = {
            "off": ([], {}),
            "api-key": (
                ["--api-keys-file", str(keys)],
                {"Authorization": f"Bearer {API_KEY}"},
            ),
            "oidc": (
                ["--oidc-issuer", ISSUER, "--oidc-audience", "deepaas",
                 "--oidc-jwks", str(jwks), "--oidc-role", "predict=predict"],
                {"Authorization": f"Bearer {token}"},
            ),
        }  # fmt: skip
        results: dict[str, list[dict[str, float]]] = {name: [] for name in sides}
        for round_ in range(args.rounds):
            for name, (options, headers) in sides.items():
                env["XDG_DATA_HOME"] = str(root / f"state-{name}-{round_}")
                figures = measure(args, env, options, headers)
                results[name].append(figures)
                shown = ", ".join(f"{k} {v:.2f}" for k, v in figures.items())
                print(f"round {round_ + 1} {name:8} {shown}", flush=True)

    print()
    print(f"{'figure':24}" + "".join(f" {n:>10}" for n in results)
          + "".join(f" {n + '/off':>12}" for n in list(results)[1:]))  # fmt: skip
    for key in results["off"][0]:
        medians = {
            name: statistics.median(r[key] for r in rounds)
            for name, rounds in results.items()
        }
        line = f"{key:24}" + "".join(f" {v:10.2f}" for v in medians.values())
        for name in list(results)[1:]:
            line += f" {medians[name] / medians['off']:11.3f}x"
        print(line)
    print("\none credentials check, alone (microseconds):")
    for name, micros in costs.items():
        print(f"  {name:28} {micros:8.1f}")
    print(
        f"\n{args.rounds} round(s), {args.workers} workers, {os.cpu_count()} CPUs, "
        f"load by {args.client} ({args.seconds:g} s per load), access log off"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

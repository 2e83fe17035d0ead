"""The same requests to upstream DEEPaaS 2.6.0 and to this deepaas, on the same
model packages: status, media type and normalised body must agree, or the
difference is listed here as deliberate, with its reason.

Each model is served alone on both sides (upstream cannot serve class entry
points beside others); the servers run on loopback ports.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from yarl import URL

from tests import helpers
from tests.compat.conftest import TALLY

pytestmark = [pytest.mark.compat, pytest.mark.timeout(600)]

# Values that differ by nature between two servers: process ids, training
# ids and times, temporary paths.
VOLATILE = frozenset(
    {"pid", "warmed_in", "uuid", "date", "finish_date", "duration", "path"}
)
TIMEOUT = 10  # seconds an answer may take before it counts as a hang

# Reasons shared by several probes.
JSON_ERRORS = (
    'errors are JSON {"message": ...} here; upstream answers aiohttp\'s text/plain '
    "pages (or an HTML traceback page for a crash)"
)
NO_SLASH = (
    "a path without its trailing slash is served as it is here; upstream answers a "
    "308 to the path with the slash (a client that follows it gets the same answer)"
)
ENUM = (
    "old-style enum= choices are enforced here (422 naming them), as the spec of "
    "both servers advertises; upstream hands any value to the model unchecked"
)
WORKER_CRASH = (
    "a worker that dies is a JSON 500 naming the exit here, and replaced; upstream "
    "never answers"
)
HUNG = "upstream hangs from then on: its worker pool is broken"
UPSTREAM_500 = "upstream fails with a 500 (an unhandled exception in the server)"


@dataclasses.dataclass(frozen=True)
class Probe:
    """One request, and why the two servers answer it differently, if they do."""

    name: str
    method: str
    path: str
    query: str = ""
    json: Any = None
    form: dict[str, str] | str | None = None
    files: tuple[tuple[str, str, bytes], ...] = ()  # (field, filename, content)
    headers: dict[str, str] | None = None
    deliberate: str | None = None
    # False for a page that is each server's own (Swagger UI's build): only
    # the status and the media type are compared.
    same_body: bool = True


@dataclasses.dataclass(frozen=True)
class Answer:
    status: int
    media_type: str
    body: Any

    def describe(self) -> str:
        body = (
            json.dumps(self.body)[:300]
            if not isinstance(self.body, str)
            else self.body[:300]
        )
        return f"{self.status} {self.media_type} {body}"


def normalise(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: normalise(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [normalise(v) for v in value]
    return value


async def ask(session: aiohttp.ClientSession, base: str, probe: Probe) -> Answer:
    url = URL(
        base + probe.path + (f"?{probe.query}" if probe.query else ""), encoded=True
    )
    data: Any = None
    if probe.files:
        form = aiohttp.FormData()
        for key, value in (probe.form or {}).items():
            form.add_field(key, value)
        for field, filename, content in probe.files:
            form.add_field(field, content, filename=filename)
        data = form
    elif probe.form is not None:
        data = probe.form
    try:
        async with session.request(
            probe.method, url, json=probe.json, data=data, headers=probe.headers,
            allow_redirects=False, timeout=aiohttp.ClientTimeout(total=TIMEOUT),
        ) as resp:  # fmt: skip
            raw = await resp.read()
            media_type = resp.content_type
    except TimeoutError:
        return Answer(0, "", "no answer (hangs)")
    except aiohttp.ClientError as exc:
        return Answer(0, "", f"connection failed: {type(exc).__name__}")
    body: Any
    if media_type == "application/json":
        body = normalise(json.loads(raw))
    elif media_type.startswith("text/"):
        body = raw.decode(errors="replace")
    else:
        body = f"{len(raw)} bytes, sha256 {hashlib.sha256(raw).hexdigest()[:16]}"
    return Answer(resp.status, media_type, body)


@pytest.fixture(scope="module")
def testmodels(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("compat-models")
    return helpers.install_model_packages(["testmodels"], root)["testmodels"]


@dataclasses.dataclass
class Pair:
    ours: helpers.Server
    upstream: helpers.Server


@pytest.fixture
def serve(testmodels, upstream_bin, tmp_path) -> Iterator[Any]:
    """Start both servers on one model; stop them after the test."""
    started: list[helpers.Server] = []

    def serve(model: str) -> Pair:
        env = helpers.env_with(testmodels, DEEPAAS_V2_MODEL=model)
        ours = helpers.Server(["--state-dir", str(tmp_path / "state")], env)
        upstream = helpers.Server([], env, bin_dir=upstream_bin)
        started.extend([ours, upstream])
        ours.wait_ready("/readyz")
        upstream.wait_ready("/v2/models/")
        return Pair(ours, upstream)

    yield serve
    for server in started:
        if server.proc.poll() is None:
            server.proc.kill()
            server.communicate()
        server.close()


@pytest.fixture(scope="session")
def tally(request) -> dict[str, int]:
    """Identical and deliberately different answers, counted for the summary."""
    return request.config.stash.setdefault(TALLY, {"identical": 0, "deliberate": 0})


# What a 400 or 422 here adds to upstream's (which names the field at the top
# level).
OUR_422_ADDITIONS = ("message", "errors")
# What GET /v2/ and a model's object add to upstream's: the Open Inference
# Protocol's server and model metadata (upstream's keys keep their values).
PROTOCOL_ADDITIONS = ("name", "extensions", "versions", "platform", "inputs", "outputs")


def agree(probe: Probe, ours: Answer, theirs: Answer) -> bool:
    """Whether two answers are the same, once what is ours alone is set aside:
    a 422's added ``message`` and ``errors``, the Open Inference Protocol's
    metadata keys, and the bodies of pages that are each server's own."""
    if not probe.same_body:
        return (ours.status, ours.media_type) == (theirs.status, theirs.media_type)
    if ours.status == theirs.status == 200 and isinstance(ours.body, dict):
        theirs_keys = theirs.body if isinstance(theirs.body, dict) else {}
        ours = dataclasses.replace(
            ours,
            body={
                k: v
                for k, v in ours.body.items()
                if k not in PROTOCOL_ADDITIONS or k in theirs_keys
            },
        )
    if (
        ours.status == theirs.status
        and ours.status in (400, 422)
        and isinstance(ours.body, dict)
        and isinstance(theirs.body, dict)
    ):
        kept = {
            k: v
            for k, v in ours.body.items()
            if k not in OUR_422_ADDITIONS or k in theirs.body
        }
        ours = dataclasses.replace(ours, body=kept)
    return ours == theirs


async def compare(pair: Pair, probes: list[Probe], tally: dict[str, int]) -> None:
    """Send every probe to both; fail on any difference not listed."""
    problems = []
    async with aiohttp.ClientSession() as session:
        for probe in probes:
            ours = await ask(session, pair.ours.url, probe)
            theirs = await ask(session, pair.upstream.url, probe)
            same = agree(probe, ours, theirs)
            if same and probe.deliberate:
                problems.append(f"{probe.name}: listed as deliberate but now identical")
            elif not same and not probe.deliberate:
                problems.append(
                    f"{probe.name}:\n    ours:     {ours.describe()}\n"
                    f"    upstream: {theirs.describe()}"
                )
            else:
                tally["deliberate" if probe.deliberate else "identical"] += 1
    assert not problems, "\n".join(problems)


MM = "/v2/models/module-model"
DISCOVERY = [
    Probe("versions", "GET", "/"),
    Probe("v2", "GET", "/v2/"),
    Probe("v2 without slash", "GET", "/v2", deliberate=NO_SLASH),
    Probe("models", "GET", "/v2/models/"),
    Probe("models without slash", "GET", "/v2/models", deliberate=NO_SLASH),
    Probe("one model", "GET", MM + "/"),
    Probe("one model without slash", "GET", MM, deliberate=NO_SLASH),
    Probe("unknown model", "GET", "/v2/models/nope/", deliberate=JSON_ERRORS),
    Probe("unknown path", "GET", "/v3/", deliberate=JSON_ERRORS),
    Probe("swagger ui", "GET", "/api", same_body=False),
    Probe(
        "debug endpoint (off)",
        "GET",
        "/v2/debug/",
        deliberate="a disabled endpoint is absent (404) here; upstream answers 204",
    ),
    Probe("repeated slashes", "GET", "//v2//models/"),
    Probe("wrong method", "PUT", "/v2/models/", deliberate=JSON_ERRORS),
]

PREDICT = MM + "/predict/"
MODULE_MODEL = [
    Probe("defaults", "POST", PREDICT),
    Probe("no trailing slash", "POST", MM + "/predict", deliberate=NO_SLASH),
    Probe("query", "POST", PREDICT, "count=3&ratio=0.25&flag=true&text=bar&mode=b"),
    Probe("list in the query", "POST", PREDICT, "numbers=1&numbers=2.5"),
    Probe("urlencoded form", "POST", PREDICT, form={"count": "4", "text": "baz"}),
    Probe(
        "multipart form",
        "POST",
        PREDICT,
        form={"count": "5"},
        files=(("data", "a.txt", b"hello"),),
    ),
    Probe("json body", "POST", PREDICT, json={"count": 6, "numbers": [3, 4]}),
    Probe("json scalar for a list", "POST", PREDICT, json={"numbers": 1.5}),
    Probe("query over json", "POST", PREDICT, "count=2", json={"count": 7}),
    Probe("query over form", "POST", PREDICT, "count=2", form={"count": "8"}),
    Probe("unknown query argument", "POST", PREDICT, "count=2&_=1699999999"),
    Probe("accept to a model without it", "POST", PREDICT, "accept=application/json"),
    Probe("unknown form argument", "POST", PREDICT, form={"colour": "red"}),
    Probe("unknown json argument", "POST", PREDICT, json={"colour": "red"}),
    Probe("extra multipart part", "POST", PREDICT, files=(("other", "b.txt", b"x"),)),
    Probe("a value in the query for a file", "POST", PREDICT, "data=x"),
    Probe(
        "a body that is not json",
        "POST",
        PREDICT,
        form="{not json",
        headers={"Content-Type": "application/json"},
    ),
    Probe("not an integer", "POST", PREDICT, "count=many"),
    Probe("out of range", "POST", PREDICT, "count=11"),
    Probe("not in the enum", "POST", PREDICT, "text=nope", deliberate=ENUM),
    Probe("not one of", "POST", PREDICT, "mode=c"),
    Probe("not a number list", "POST", PREDICT, "numbers=a"),
    Probe("not a url", "POST", PREDICT, "link=not-a-url"),
    Probe("a url", "POST", PREDICT, "link=https://example.org/cat.png"),
    Probe(
        "bad json",
        "POST",
        PREDICT,
        headers={"Content-Type": "application/json"},
        form=None,
        json=None,
    ),
    Probe(
        "accept header on a model without accept",
        "POST",
        PREDICT,
        headers={"Accept": "image/png"},
    ),
    Probe(
        "repeated slashes on predict",
        "POST",
        "//v2/models/module-model/predict/",
        "count=2",
    ),
    Probe(
        "predict with GET",
        "GET",
        PREDICT,
        deliberate="GET on a predict path lists its asynchronous predictions here "
        "(Prefer: respond-async, a deepaas addition); upstream answers 405",
    ),
    Probe("predict with PUT", "PUT", PREDICT, deliberate=JSON_ERRORS),
]


async def test_discovery_and_predict_arguments(serve, tally):
    await compare(serve("module-model"), DISCOVERY + MODULE_MODEL, tally)


AM = "/v2/models/accept-model/predict/"
ACCEPT_MODEL = [
    Probe("default media type", "POST", AM),
    Probe("accept argument", "POST", AM, "accept=image/png"),
    Probe("accept json", "POST", AM, "accept=application/json"),
    Probe(
        "accept wildcard",
        "POST",
        AM,
        "accept=*/*",
        deliberate="*/* reaches the model as upstream passes it, and the bytes "
        "it returns for it are answered as they are here; " + UPSTREAM_500,
    ),
    Probe("accept outside the choices", "POST", AM, "accept=text/csv"),
    Probe("accept header of no choice", "POST", AM, headers={"Accept": "text/csv"}),
    Probe("accept header wildcard", "POST", AM, headers={"Accept": "*/*"}),
    Probe(
        "accept header of a choice",
        "POST",
        AM,
        headers={"Accept": "image/png"},
        deliberate="an Accept header naming one of the model's choices selects it "
        "here; upstream never reads the header",
    ),
]


async def test_media_types(serve, tally):
    await compare(serve("accept-model"), ACCEPT_MODEL, tally)


FP = "/v2/models/failing/predict/"
FAILING = [
    Probe("ok", "POST", FP),
    Probe("model raises", "POST", FP, "mode=raise", deliberate=JSON_ERRORS),
    Probe("after it raised", "POST", FP),
    Probe(
        "model does not implement",
        "POST",
        FP,
        "mode=not-implemented",
        deliberate="a model's NotImplementedError is 501 here; upstream says 500",
    ),
    Probe("after not implementing", "POST", FP),
    Probe(
        "prediction JSON cannot encode",
        "POST",
        FP,
        "mode=unencodable",
        deliberate=JSON_ERRORS,
    ),
    Probe("a file", "POST", FP, files=(("data", "x.bin", b"12345"),)),
    Probe(
        "an empty form value for the file",
        "POST",
        FP,
        form={"data": "", "mode": "ok"},
        deliberate=UPSTREAM_500,
    ),
    # Last: upstream never recovers from these.
    Probe(
        "model raises an HTTP error",
        "POST",
        FP,
        "mode=http",
        deliberate="the model's status and reason here; " + HUNG,
    ),
    Probe("after the HTTP error", "POST", FP, deliberate=HUNG),
]


async def test_model_failures(serve, tally):
    await compare(serve("failing"), FAILING, tally)


async def test_a_worker_that_dies(serve, tally):
    probes = [
        Probe("worker exits", "POST", FP, "mode=exit", deliberate=WORKER_CRASH),
        Probe("after the exit", "POST", FP, deliberate=HUNG),
    ]
    await compare(serve("failing"), probes, tally)


EP = "/v2/models/echo/predict/"
FILES_PATH = "/v2/models/files/predict/"
CAT = ("image", "cat.png", b"\x89PNG-a-cat")


SEVERAL = "a List of file fields takes several files here; " + UPSTREAM_500


async def test_files(serve, tally):
    echo = [
        Probe("one file", "POST", EP, files=(CAT,)),
        Probe(
            "the upload answered as an image",
            "POST",
            EP,
            "accept=image/png",
            files=(CAT,),
        ),
        Probe("text about it", "POST", EP, "accept=text/plain", files=(CAT,)),
        Probe("no file for a required one", "POST", EP),
        Probe(
            "a value for the file",
            "POST",
            EP,
            form={"image": "not a file"},
            deliberate="a value for a file is ignored, as upstream does, and the "
            "required file missing is a 422 here; " + UPSTREAM_500,
        ),
    ]
    await compare(serve("echo"), echo, tally)
    files = [
        Probe(
            "one of several",
            "POST",
            FILES_PATH,
            files=(("images", "a.png", b"a"),),
            deliberate=SEVERAL,
        ),
        Probe(
            "several",
            "POST",
            FILES_PATH,
            files=(("images", "a.png", b"a"), ("images", "b.png", b"b")),
            deliberate=SEVERAL,
        ),
        Probe(
            "two files for one",
            "POST",
            FILES_PATH,
            files=(("image", "a.png", b"a"), ("image", "b.png", b"b")),
            deliberate="two files for a one-file argument are a 422 here; upstream "
            "hands the model the first and drops the rest",
        ),
        Probe(
            "the upload itself",
            "POST",
            FILES_PATH,
            "accept=image/*",
            files=(("image", "a.png", b"a"),),
        ),
    ]
    await compare(serve("files"), files, tally)


PLAIN = "/v2/models/plain-args/predict/"
PLAIN_DICTS = (
    "the deprecated plain-dict declarations work here (values, 422s); " + UPSTREAM_500
)


async def test_older_declarations(serve, tally):
    await compare(
        serve("legacy"),
        [
            Probe(
                "get_test_args",
                "POST",
                "/v2/models/legacy/predict/",
                "word=new",
                deliberate="get_test_args (older packages' name) works here; "
                + UPSTREAM_500,
            ),
            Probe("model", "GET", "/v2/models/legacy/"),
            Probe("train without arguments", "GET", "/v2/models/legacy/train/"),
        ],
        tally,
    )
    await compare(
        serve("plain-args"),
        [
            Probe(
                "plain dict arguments",
                "POST",
                PLAIN,
                "needed=!&times=3",
                deliberate=PLAIN_DICTS,
            ),
            Probe("a required one missing", "POST", PLAIN, deliberate=PLAIN_DICTS),
            Probe(
                "a value of the wrong type",
                "POST",
                PLAIN,
                "needed=!&times=x",
                deliberate=PLAIN_DICTS,
            ),
        ],
        tally,
    )
    await compare(
        serve("minimal"),
        [
            Probe(
                "metadata stand-in",
                "GET",
                "/v2/models/minimal/",
                deliberate="a model without get_metadata() is described by its "
                'name here; upstream gives it the id "0"',
            ),
            Probe("predict", "POST", "/v2/models/minimal/predict/"),
            Probe(
                "train it does not have",
                "POST",
                "/v2/models/minimal/train/",
                deliberate=JSON_ERRORS,
            ),
            Probe("no trainings", "GET", "/v2/models/minimal/train/"),
        ],
        tally,
    )


async def answer(session: aiohttp.ClientSession, method: str, url: str) -> Any:
    async with session.request(method, url) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def test_a_training_from_start_to_cancel(serve, tally):
    """The same steps on both: start, list, poll until done, read, cancel."""
    pair = serve("module-model")
    train = "/v2/models/module-model/train/"
    seen: dict[str, list[Any]] = {"ours": [], "upstream": []}
    async with aiohttp.ClientSession() as session:
        for side, server in (("ours", pair.ours), ("upstream", pair.upstream)):
            started = await answer(session, "POST", f"{server.url}{train}?epochs=1")
            uuid = started["uuid"]
            body = started
            for _ in range(300):
                body = await answer(session, "GET", f"{server.url}{train}{uuid}")
                if body["status"] != "running":
                    break
                await asyncio.sleep(0.1)
            listed = await answer(session, "GET", f"{server.url}{train}")
            cancelled = await answer(session, "DELETE", f"{server.url}{train}{uuid}")
            async with session.get(f"{server.url}{train}{uuid}") as resp:
                gone = resp.status
            seen[side] = [
                normalise(started), normalise(body), normalise(listed),
                normalise(cancelled), gone,
            ]  # fmt: skip
    # started, finished, listed, cancelled and then forgotten: the same on both
    assert seen["ours"] == seen["upstream"]
    assert seen["ours"][1]["status"] == "done"
    assert seen["ours"][4] == 404
    tally["identical"] += 5

"""Options of the workers (processes or Ray actors) and their queue."""

from __future__ import annotations

from oslo_config import cfg

OPTS = [
    cfg.IntOpt(
        "workers",
        short="p",
        default=1,
        min=1,
        help="Number of worker processes that run predict and train calls. "
        "Each loads the model once.",
    ),
    cfg.BoolOpt(
        "warm",
        default=True,
        help="Call the model's warm() in every worker before it takes calls.",
    ),
    cfg.StrOpt(
        "executor",
        default="local",
        choices=[
            ("local", "worker processes on this machine"),
            (
                "ray",
                "workers as Ray actors, on this machine or across a cluster "
                "(needs pip install 'deepaas[ray]')",
            ),
        ],
        help="Where the workers run. With ray, the server (HTTP, validation, the "
        "spec, training records) stays here and each worker is a Ray actor.",
    ),
    cfg.FloatOpt(
        "predict-timeout",
        default=0.0,
        min=0,
        help="Longest a predict may run, in seconds; a slower one answers 504 and "
        "its worker is replaced. 0 means no limit.",
    ),
    cfg.FloatOpt(
        "queue-timeout",
        default=60.0,
        min=0,
        help="Longest a predict waits for a free worker, in seconds, before it "
        "answers 503 with Retry-After. 0 means wait as long as it takes.",
    ),
    cfg.IntOpt(
        "max-queued-predictions",
        default=0,
        min=0,
        help="Most predictions of a model that may wait for a free worker; one "
        "more is answered 503 with Retry-After at once, before its body is read. "
        "0 means no limit (--queue-timeout still bounds each wait).",
    ),
    cfg.FloatOpt(
        "worker-heartbeat",
        default=10.0,
        min=0,
        help="Seconds between checks that idle workers still answer; one that "
        "misses a check (stopped, wedged) is replaced. 0 turns the checks off.",
    ),
    cfg.IntOpt(
        "max-batch-size",
        default=16,
        min=1,
        help="Most predictions a worker runs in one predict_batch() call, for "
        "models that define predict_batch (an optional addition to the model "
        "API). Waiting predictions are grouped as a worker becomes free. 1 "
        "turns batching off: every prediction is a predict() call.",
    ),
    cfg.FloatOpt(
        "max-batch-wait-ms",
        default=2.0,
        min=0,
        help="Under load (another worker busy), how long in milliseconds a free "
        "worker of a batching model waits for more predictions to fill a batch "
        "before it runs the ones it has. With every worker free a prediction "
        "runs at once. 0 never waits: batches then form only from predictions "
        "that queued while every worker was busy.",
    ),
    cfg.ListOpt(
        "worker-gpus",
        default=[],
        help="GPU device ids (for example 0,1) given to the workers round robin: "
        "worker i sees only the i-th (CUDA_VISIBLE_DEVICES, set before the model "
        "is imported; a replacement sees what the worker it replaces saw). "
        "Empty leaves the workers' environment as the server's.",
    ),
    cfg.StrOpt(
        "ray-address",
        default="",
        help="With --executor ray: the Ray cluster to join, 'auto' or HOST:PORT "
        "(the head's GCS address). Empty: the cluster the RAY_ADDRESS "
        "environment variable names, or else a new Ray runtime on this machine.",
    ),
    cfg.FloatOpt(
        "worker-num-cpus",
        default=1.0,
        min=0,
        help="With --executor ray: CPUs each worker asks Ray for (fractions allowed).",
    ),
    cfg.FloatOpt(
        "worker-num-gpus",
        default=0.0,
        min=0,
        help="With --executor ray: GPUs each worker asks Ray for (fractions "
        "allowed, to share a GPU); Ray sets the worker's CUDA_VISIBLE_DEVICES.",
    ),
    cfg.DictOpt(
        "worker-resources",
        default={},
        help="With --executor ray: custom Ray resources each worker asks for, as "
        "NAME:AMOUNT pairs (for example gpu_a100:1), to place the workers on the "
        "nodes that declare them (ray start --resources).",
    ),
]

"""Options of request bodies: their sizes and time, where uploaded files go."""

from __future__ import annotations

from oslo_config import cfg

OPTS = [
    cfg.IntOpt(
        "client-max-size",
        default=0,
        min=0,
        help="Largest request body accepted, in bytes; larger ones get 413. "
        "0 means no limit.",
    ),
    cfg.IntOpt(
        "max-memory-body",
        default=16 * 1024 * 1024,
        min=0,
        help="Largest request body read into memory, in bytes, counted after "
        "decompression: a JSON or urlencoded body, or the non-file fields of a "
        "multipart body (413 beyond). Uploaded files stream to disk and are "
        "bounded by --client-max-size only. 0 means no limit.",
    ),
    cfg.FloatOpt(
        "body-timeout",
        default=60.0,
        min=0,
        help="Seconds a request body may go without sending data (a file "
        "upload), or take in all (a body read into memory); 408 beyond. 0 "
        "means no limit.",
    ),
    cfg.IntOpt(
        "max-parts",
        default=500,
        min=0,
        help="Most parts a multipart request body may have (413 beyond). "
        "0 means no limit.",
    ),
    cfg.StrOpt(
        "upload-memory-dir",
        default="/dev/shm",
        help="Memory-backed directory (a tmpfs) for the uploaded files of small "
        "predictions, which the model then reads at memory speed. Empty, or "
        "a directory that cannot be written, keeps every upload on disk "
        "(in TMPDIR). A model that renames an upload with os.rename() to "
        "another file system must copy it instead (shutil.move does).",
    ),
    cfg.IntOpt(
        "upload-memory-max",
        default=8 * 1024 * 1024,
        min=0,
        help="Largest prediction request, in bytes (its declared "
        "Content-Length), whose files go to --upload-memory-dir; larger ones, "
        "those of unknown length and those of trainings go to disk.",
    ),
    cfg.IntOpt(
        "upload-memory-total",
        default=256 * 1024 * 1024,
        min=0,
        help="Most bytes the uploads of all requests may hold in "
        "--upload-memory-dir at once; beyond, new uploads go to disk.",
    ),
    cfg.BoolOpt(
        "strict-arguments",
        default=False,
        help="Refuse (422) arguments a model does not declare. By default they "
        "are ignored, as upstream DEEPaaS does, and named in the answer's "
        "Deepaas-Ignored-Arguments header.",
    ),
]

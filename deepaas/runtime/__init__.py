"""Where the models run: the executors and their workers.

The server side: the ``Executor`` interface (``executor``), the dispatch,
batching and replacements every executor shares (``pool``, with its
``queue`` of waiting calls and its ``workers``), worker processes
on this machine (``local``) with the memory they share for results
(``results``), and ``ModelWrapper`` (``wrapper``). The worker process's own
side (``worker``, with ``worker_uploads`` and ``worker_results``), the
messages between the two (``protocol``) and the reading of forms both sides
share (``forms``). The Ray executor (``ray_executor``, ``ray_worker``) is
imported only when selected. Nothing here imports aiohttp.
"""

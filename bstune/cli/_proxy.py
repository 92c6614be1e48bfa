"""``bstune storage-proxy``: Optuna's gRPC storage proxy in front of a study's database."""

from __future__ import annotations

import argparse
import os
import sys

from bstune.cli._exit import EXIT_OK


def _cmd_storage_proxy(args: argparse.Namespace) -> int:
    from bstune.config._errors import ConfigError
    from bstune.config._schema import STORAGE_VARIABLES
    from bstune.config._secrets import mask_url
    from bstune.tune._storage import serve_storage_proxy

    url = args.storage or next(
        (os.environ[v].strip() for v in STORAGE_VARIABLES if os.environ.get(v, "").strip()), None
    )
    if not url:
        raise ConfigError(
            "storage-proxy: no storage; expected --storage DATABASE_URL, or the URL in "
            "$BSTUNE_STORAGE (keeps a password off the command line)"
        )
    def ready() -> None:
        print(f"storage proxy for {mask_url(url)} on grpc://{args.host}:{args.port} (Ctrl-C "
              f"stops it); workers use --storage grpc://{args.host}:{args.port}",
              file=sys.stderr, flush=True)  # fmt: skip

    serve_storage_proxy(url, args.host, args.port, on_ready=ready)
    return EXIT_OK

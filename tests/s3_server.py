"""A real S3-compatible server on loopback for the tests: moto's server mode in a thread of the
test process (``moto.server.ThreadedMotoServer``), on a free port, stopped when the session ends.

Each test gets a bucket of its own (``new_bucket``). ``options`` are the fsspec storage options
that reach it (endpoint and the dummy credentials moto accepts), so that they travel inside the
artifact store to Ray workers that were started before the test set anything.

Example::

    server = S3Server.start()
    url = server.new_bucket() + "/rayline"     # "s3://rl-1/rayline"
    server.stop()
"""

from __future__ import annotations

import itertools
from typing import Any

_KEY = "rayline-test-key"
_SECRET = "rayline-test-secret"


class S3Server:
    def __init__(self, server: Any, endpoint: str) -> None:
        self._server = server
        self.endpoint = endpoint
        self._numbers = itertools.count(1)

    @classmethod
    def start(cls) -> S3Server:
        import logging

        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        return cls(server, f"http://{host}:{port}")

    @property
    def options(self) -> dict[str, Any]:
        """fsspec (s3fs) storage options for this server."""
        return {"endpoint_url": self.endpoint, "key": _KEY, "secret": _SECRET,
                "client_kwargs": {"region_name": "us-east-1"}}  # fmt: skip

    @property
    def env(self) -> dict[str, str]:
        """The standard AWS environment variables for this server."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": _KEY,
                "AWS_SECRET_ACCESS_KEY": _SECRET, "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip

    def filesystem(self) -> Any:
        import s3fs

        return s3fs.S3FileSystem(skip_instance_cache=True, **self.options)

    def new_bucket(self) -> str:
        """A fresh, empty bucket: ``s3://<name>``."""
        name = f"rl-{next(self._numbers)}"
        import boto3

        boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=_KEY,
                     aws_secret_access_key=_SECRET, region_name="us-east-1").create_bucket(Bucket=name)
        return f"s3://{name}"

    def stop(self) -> None:
        self._server.stop()

"""The models a gateway serves, each a `RemoteModel` whose swarm client every request shares.

The server runs on the first model's swarm client loop (`loop`), so a request awaits the swarm with
no thread in between. Requests become generation tasks, a bounded number at once shared fairly
between clients (`workers.py`; no lock between jobs: each has its own session, so the nodes batch
or interleave them). Errors the SDK raises become OpenAI errors: a bad prompt is a 400, a swarm
that cannot cover the model a 503 naming the blocks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Coroutine, TypeVar

from node.errors import ConfigError
from routing.errors import NoRouteError, RoutingError
from shards.catalog import CATALOG
from shards.errors import ShardsError

from .errors import APIError, bad_request, model_not_found, no_route, swarm_failure
from .jobs import GenerationJob
from .schemas import GenerationRequest
from .settings import ApiSettings
from .workers import Client, Workers

if TYPE_CHECKING:
    from routing.records import ServerRecord
    from swarmlm.sdk import RemoteModel

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class ServedModel:
    id: str  # what requests name in "model" (the root hex works too)
    remote: RemoteModel
    created: int  # when this gateway joined the swarm for it (OpenAI's `created`, Unix seconds)

    @property
    def root(self) -> str:
        return self.remote.root

    async def on_client(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await a coroutine on the swarm client's loop without blocking the server's."""
        return await self.remote.client.on_loop(coro)

    async def records(self) -> dict[str, ServerRecord]:
        """The model's signed DHT records as the swarm holds them now (expired ones are gone)."""
        client = self.remote.client
        return await self.on_client(client.records(self.root, self.remote.store.manifest.num_blocks))


def model_id(spec: str, remote: RemoteModel) -> str:
    """A catalogued name as given, else the manifest's name, else the store folder's name."""
    return spec if spec in CATALOG else remote.store.manifest.name or Path(spec).name


def _sibling(path: Path, tag: str) -> Path:
    return path.with_name(f"{path.stem}-{tag}{path.suffix}")


class Gateway:
    def __init__(self, models: list[ServedModel], settings: ApiSettings) -> None:
        self.models = {m.id: m for m in models}
        self.settings = settings
        self.workers = Workers(settings.max_concurrency, settings.max_queue, settings.max_per_client)
        self.jobs: dict[GenerationJob, Client] = {}

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """Where the server runs: the first model's swarm client loop (a thread of its own)."""
        return next(iter(self.models.values())).remote.loop

    @classmethod
    def connect(cls, settings: ApiSettings) -> "Gateway":
        """Join the swarm once per model (blocking). Each model has its own swarm client, so the second
        and later ones key and log beside the first (identity-NAME.key, ledger-NAME.sqlite): one peer
        ID must not run two P2P daemons, nor two writers share one ledger."""
        from swarmlm.sdk import RemoteModel

        models: list[ServedModel] = []
        try:
            for i, spec in enumerate(settings.model):
                tag = Path(spec).name
                identity = settings.identity if i == 0 else _sibling(settings.identity, tag)
                ledger = settings.ledger if i == 0 else _sibling(settings.ledger, tag)
                remote = RemoteModel.connect(settings.peers, spec, identity=identity, ledger=ledger,
                                             device=settings.device, recover_timeout=settings.recover_timeout,
                                             ring=settings.ring)
                served = ServedModel(model_id(spec, remote), remote, int(time.time()))
                models.append(served)
                if [m.id for m in models].count(served.id) > 1:
                    raise ConfigError(f"--model names {served.id!r} twice")
        except BaseException:
            for m in models:
                m.remote.close()
            raise
        return cls(models, settings)

    def model(self, name: str) -> ServedModel:
        for m in self.models.values():
            if name in (m.id, m.root):
                return m
        raise model_not_found(name, list(self.models))

    async def start(self, request: GenerationRequest, client: Client) -> GenerationJob:
        """Check the request against the model (prompt, context length) and start generating, or queue it in
        `client`'s turn (429 when the queue is full)."""
        served = self.model(request.model)
        remote = served.remote
        ids = await asyncio.get_running_loop().run_in_executor(None, _encode, remote, request)  # not behind generations
        limit = remote.config.max_context
        max_tokens = request.max_tokens or max(1, min(self.settings.default_max_tokens, limit - len(ids)))
        if len(ids) + max_tokens > limit:  # with no max_tokens, a prompt that fills the context leaves room for none
            raise bad_request(f"This model's maximum context length is {limit} tokens. However, you requested "
                              f"{len(ids) + max_tokens} tokens ({len(ids)} in the prompt, {max_tokens} for the "
                              "completion). Please reduce the length of the prompt or max_tokens.",
                              param="messages" if not request.raw else "prompt", code="context_length_exceeded")
        job = GenerationJob(remote, ids, max_tokens, request)
        self.workers.submit(client, job)
        self.jobs[job] = client
        return job

    def finished(self, job: GenerationJob) -> None:
        job.cancel()  # no-op once it finished; stops it if the client left
        client = self.jobs.pop(job, None)
        if client is not None:
            self.workers.withdraw(client, job)

    async def api_error(self, error: Exception, model: str, max_length: int = 1) -> APIError:
        """The OpenAI error for what a generation raised (re-raises what is not the user's or swarm's)."""
        if isinstance(error, APIError):
            return error
        if isinstance(error, ShardsError):
            return bad_request(str(error))
        if isinstance(error, NoRouteError):
            coverage = await self.model(model).remote.coverage(max_length)
            return no_route(model, list(coverage.uncovered), str(error))
        if isinstance(error, RoutingError):
            return swarm_failure(str(error))
        raise error

    async def drain(self) -> None:
        """Stop live generations and wait until their sessions closed with receipts (on the server's loop)."""
        for job in list(self.jobs):
            job.cancel()
        await self.workers.drain()

    def close(self) -> None:
        """Leave the swarm (after `drain`)."""
        for m in reversed(self.models.values()):
            m.remote.close()


def _encode(remote: RemoteModel, request: GenerationRequest) -> list[int]:
    from shards.generation import encode_prompt

    param = "prompt" if request.raw else "messages"
    try:
        ids = encode_prompt(remote.tokenizer, request.prompt, request.raw, remote.config.vocab_size,
                            request.tools and request.tools.prompt_tools())
    except ShardsError as e:
        raise bad_request(str(e), param=param) from None
    if not ids:
        raise bad_request("the prompt is empty", param=param)
    return ids

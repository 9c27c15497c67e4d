"""A standby daemon serving the isolated steps the active daemon offers (shared journals).

While it stands by, a daemon claims offered steps of the files it has (by digest, in its
own copy of the folder), runs each in a worker of its own pool and writes the reply. The
active daemon keeps each run's bookkeeping and journal writes; a standby only computes.
A job the active daemon gives up (a timeout, an abort, a take-over) is withdrawn: its
worker is killed. Journal trouble never stops a standby: it waits and tries again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from ...clock import Clock
from ...define.env import Env, Redactor
from ...errors import JournalError, RemoteError
from ...folder.loader import (
    FileSource,
    FolderConfig,
    LoadedFile,
    LoadFailed,
    load_file,
    read_file,
)
from ...folder.names import shown
from ...folder.sync import workflow_files
from ...journal import StepJob, StepJobs
from ...journal.liveness import HOST
from ...redaction import SECRETS
from ..context import StepContext
from . import jobs
from .pacing import Backoff, news_or
from .plan import file_ref
from .pool import StepRef, WorkerCrashed, WorkerPool

_log = logging.getLogger("orchestrator.workers")

NEWS_WAIT = 0.5  # seconds between looks at the journal without a notification
RESCAN_EVERY = 1.0  # seconds between looks at the folder for changed files


class FolderIndex:
    """The workflow files of a folder that load here, by digest; read again when they change.

    A file is loaded as the folder's sync loads it (a probe in a subprocess, then an
    import): a standby offers to run only the steps of files that load on its machine, so
    a package it lacks sends those steps elsewhere instead of failing them. The secret
    values of a loaded file's workflows (their env over `runtime_env`, as the active daemon
    registers them) are masked in this process (its log: what their steps print) while the
    file is indexed; `close` forgets them.
    """

    def __init__(
        self, folder: Path, runtime_env: dict[str, str], secret_keys: tuple[str, ...] = ()
    ) -> None:
        self._folder = folder
        self._runtime_env = runtime_env
        self._secret_keys = secret_keys
        self._secret_tokens: dict[Path, int] = {}  # path -> its `SECRETS` token
        self._seen: dict[Path, tuple[int, int]] = {}  # path -> (mtime_ns, size)
        self._by_path: dict[Path, LoadedFile] = {}
        self._by_digest: dict[str, LoadedFile] = {}  # `_by_path` by digest, made by a rescan
        self._config = FolderConfig()
        self._looked_at = float("-inf")

    async def digests(self) -> set[str]:
        """The digests of the files as they are now (looked at once a second at most)."""
        if time.monotonic() - self._looked_at >= RESCAN_EVERY:
            await self._rescan()
        return set(self._by_digest)

    def get(self, digest: str) -> FileSource | None:
        """The file with `digest`, if the folder has it."""
        loaded = self._by_digest.get(digest)
        return None if loaded is None else loaded.source

    def loaded(self, digest: str) -> LoadedFile | None:
        """The file with `digest` as loaded here (its workflows), if the folder has it."""
        return self._by_digest.get(digest)

    async def _rescan(self) -> None:
        try:
            config = FolderConfig.read(self._folder)
        except LoadFailed:
            config = self._config  # the previous settings stay, as the folder's sync does
        if config != self._config:
            self._config, self._seen, self._by_path = config, {}, {}
        present: dict[Path, tuple[int, int]] = {}
        for path in workflow_files(self._folder):
            try:
                stat = path.stat()
            except OSError:
                continue
            present[path] = (stat.st_mtime_ns, stat.st_size)
            if self._seen.get(path) != present[path]:
                await self._load(path)
        for gone in set(self._by_path) - set(present):
            del self._by_path[gone]
            self._forget_secrets(gone)
        self._seen = present
        self._by_digest = {loaded.source.digest: loaded for loaded in self._by_path.values()}
        self._looked_at = time.monotonic()

    def close(self) -> None:
        """Forget the secrets of every file indexed."""
        for path in list(self._secret_tokens):
            self._forget_secrets(path)

    def _know_secrets(self, path: Path, loaded: LoadedFile) -> None:
        values: set[str] = set()
        for workflow, _ in loaded.workflows:
            env = Env(workflow.env, self._runtime_env)
            values |= Redactor(env, extra_keys=self._secret_keys).values
        self._forget_secrets(path)
        if values:
            self._secret_tokens[path] = SECRETS.add(values)

    def _forget_secrets(self, path: Path) -> None:
        token = self._secret_tokens.pop(path, None)
        if token is not None:
            SECRETS.discard(token)

    async def _load(self, path: Path) -> None:
        self._by_path.pop(path, None)
        self._forget_secrets(path)
        if str(self._folder) not in sys.path:  # its helpers (`_*.py`) import by name
            sys.path.insert(0, str(self._folder))
        data = _read(path)
        if data is None:
            return
        try:
            loaded = await load_file(path, data, self._config)
        except LoadFailed as exc:
            _log.warning(
                "standby: %s does not load here (%s): its steps run in other daemons",
                shown(path),
                exc.message,
            )
            return
        self._know_secrets(path, loaded)
        self._by_path[path] = loaded


def _read(path: Path) -> bytes | None:
    try:
        return read_file(path)
    except OSError:
        return None


class StepServer:
    """Claims offered steps, runs them in `pool`, replies; until cancelled."""

    def __init__(
        self,
        jobs: StepJobs,
        folder: Path,
        pool: WorkerPool,
        *,
        token: str,
        runtime_env: dict[str, str],
        clock: Clock,
        secret_keys: tuple[str, ...] = (),
        index: FolderIndex | None = None,
    ) -> None:
        self._jobs = jobs
        # An index given is shared (with the run server) and closed by its owner.
        self._owns_index = index is None
        self._index = index or FolderIndex(folder, runtime_env, secret_keys)
        self._pool = pool
        self._token = token
        self._runtime_env = runtime_env
        self._clock = clock
        self._serving: dict[int, asyncio.Task[None]] = {}
        self._room = asyncio.Event()  # set when a served step ends: claim the next at once
        self._unsure = False  # set by a failure to reach the journal (see `_turn`)
        self._by = f"pid {os.getpid()} on {HOST}"
        self.served = 0  # steps it replied to

    async def run(self) -> None:
        """Serve until cancelled; then every step it runs is given up (its worker killed)."""
        try:
            # Leaving the group cancels the steps served and waits for them to end.
            async with asyncio.TaskGroup() as tasks:
                await self._serve_forever(tasks)
        finally:
            if self._owns_index:
                self._index.close()
            await self._jobs.close()

    async def _serve_forever(self, tasks: asyncio.TaskGroup) -> None:
        connected, backoff = False, Backoff()
        while True:
            try:
                if not connected:
                    await self._jobs.open()
                    connected = True
                await self._turn(tasks)
                await news_or(self._room, self._jobs, NEWS_WAIT)
                backoff.reset()
            except JournalError as exc:
                self._unsure, connected = True, False
                if backoff.failures == 1:  # twice in a row (once: the schema may be migrating)
                    _log.warning("serving offered steps: %s; trying again", exc)
                await self._jobs.close()
                await backoff.pause()

    async def _turn(self, tasks: asyncio.TaskGroup) -> None:
        """One look at the journal: stray claims released, withdrawn steps stopped, new claimed."""
        if self._unsure:  # a claim may have committed unheard: its jobs are released
            await self._jobs.unclaim_strays(token=self._token, keep=list(self._serving))
            self._unsure = False
        await self._stop_withdrawn()
        await self._claim(tasks)

    async def _stop_withdrawn(self) -> None:
        """Stop the steps served whose jobs were withdrawn (cancelled, forgotten, requeued)."""
        if not self._serving:
            return
        for job_id in await self._jobs.withdrawn(list(self._serving), token=self._token):
            task = self._serving.pop(job_id, None)
            if task is not None:
                task.cancel()  # its worker is killed, as a local timeout kills it

    async def _claim(self, tasks: asyncio.TaskGroup) -> None:
        """Claim offered steps of the files this folder has, as many as workers are free."""
        room = self._pool.settings.max - len(self._serving)
        digests = await self._index.digests()
        if room <= 0 or not digests:
            return
        claimed = await self._jobs.claim(
            token=self._token, digests=digests, limit=room, now=self._clock.now_us()
        )
        for job in claimed:
            self._serving[job.id] = tasks.create_task(self._serve(job), name=f"step-job-{job.id}")

    async def _serve(self, job: StepJob) -> None:
        try:
            self.served += await self._answer(job, await self._outcome(job))
        except Exception:  # noqa: BLE001 - a bug here must not stop serving other steps
            _log.exception("step job %d could not be served", job.id)
        finally:
            # Not the task of the same job claimed again (requeued to this standby) while
            # this one's worker was being killed: that one must stay withdrawable.
            if self._serving.get(job.id) is asyncio.current_task():
                del self._serving[job.id]
            self._room.set()

    async def _outcome(self, job: StepJob) -> dict[str, Any]:
        """The reply to `job`: how its step went here, or why it could not run."""
        try:
            return await self._run(job)
        except Exception as exc:  # noqa: BLE001 - a request it cannot read fails its step
            _log.warning("step job %d could not be run here: %r", job.id, exc)
            return {"crashed": f"the daemon serving it could not run it: {exc!r}"}

    async def _answer(self, job: StepJob, reply: dict[str, Any]) -> bool:
        """Write `reply`; one holding text the journal cannot keep, as a crash saying why.

        Unanswered, the step would wait for good (this standby is alive, so its job is
        never offered again): a pause whose condition holds a lone surrogate, say.
        """
        try:
            return await self._reply(job, self._signed(reply))
        except ValueError as exc:
            _log.warning("step job %d: its reply cannot be kept (%s): its step fails", job.id, exc)
            crashed = {"crashed": f"its reply could not be written: {exc}"}
            return await self._reply(job, self._signed(crashed))

    def _signed(self, reply: dict[str, Any]) -> dict[str, Any]:
        """`reply` saying which daemon ran it, the secrets this daemon knows masked."""
        signed: dict[str, Any] = SECRETS.redact_data({**reply, "by": self._by})
        return signed

    async def _reply(self, job: StepJob, reply: dict[str, Any]) -> bool:
        """Write `reply`; while the journal cannot be reached, try again (until withdrawn).

        A reply lost here would leave its step waiting for good: this standby is alive,
        so the active daemon never offers it again.
        """
        backoff = Backoff()
        while True:
            try:
                return await self._jobs.reply(
                    job.id,
                    token=self._token,
                    attempts=job.attempts,
                    reply=reply,
                    now=self._clock.now_us(),
                )
            except JournalError as exc:
                if backoff.failures == 0:
                    _log.warning(
                        "step job %d: its reply could not be written: %s; trying again", job.id, exc
                    )
                await backoff.pause()

    async def _run(self, job: StepJob) -> dict[str, Any]:
        request = job.request
        source = self._index.get(job.digest)
        if source is None:
            name = request.get("file", "?")
            return {"crashed": f"this daemon's folder has no version {job.digest} of {name}"}
        step = _step_ref(source, request, self._runtime_env)
        log = jobs.CollectedLog()
        ctx = _context(request["ctx"], log) if request.get("ctx") is not None else None
        try:
            outcome: object = await self._pool.call(step, job.state, ctx, request["time_limit"])
        except (RemoteError, WorkerCrashed, TimeoutError) as exc:
            outcome = exc
        reply = jobs.reply_of(outcome)
        if ctx is not None:
            reply["logs"] = log.reported()
            sent = ctx.sent()
            if sent is not None:
                reply["outbox"] = sent.to_json()
        return reply


def _step_ref(source: FileSource, request: dict[str, Any], runtime_env: dict[str, str]) -> StepRef:
    """How a worker of this daemon finds the step: this folder's file of the same digest."""
    workflow = str(request["workflow"])
    ref, load = file_ref(source, workflow, request["trigger"], request["step"])
    return StepRef(
        ref=ref,
        load=load,
        takes_ctx=bool(request["takes_ctx"]),
        is_async=bool(request["is_async"]),
        env_key=f"served:{workflow}@{source.digest}",
        env=runtime_env,
        layered=True,
    )


def _context(spec: dict[str, Any], log: jobs.CollectedLog) -> StepContext:
    return StepContext(
        run_id=str(spec["run_id"]),
        workflow_id=str(spec["workflow_id"]),
        trigger_id=str(spec["trigger_id"]),
        step_name=str(spec["step_name"]),
        step_index=int(spec["step_index"]),
        attempt=int(spec["attempt"]),
        log=log,
    )

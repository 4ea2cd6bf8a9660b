"""`smdim serve`: the studio's web server (FastAPI, run by uvicorn on 127.0.0.1).

Why FastAPI rather than gradio: the studio's core is a piano roll where bars, tracks and single
notes are selected and locked by pointer; that is a few hundred lines of canvas code against a small
JSON API, while gradio's components have no editable piano roll and would need a custom one anyway.

Safety: pieces live in memory under ids the server makes (no client path is ever opened); uploads
are size-limited and accepted only when they parse as MIDI; pieces are length-limited; sampling runs
on one worker thread with a bounded queue — a full queue answers 429 with a message, never blocks or
crashes the server.
"""
from __future__ import annotations

import base64
import binascii
import queue
import threading
import uuid
from collections import OrderedDict
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from typing import Any, Callable, Dict, List, Optional, get_type_hints

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field, create_model

from .editing import MAX_VARIATIONS, Settings, continue_piece, generate_piece, infill_piece
from .corpus import CorpusPreparing
from .piece import PieceError, StudioPiece, from_midi

STATIC = "static"


@dataclass(frozen=True)
class Limits:
    max_upload_bytes: int = 2 * 1024 * 1024
    max_tokens: int = 16384
    queue_size: int = 4
    pieces_kept: int = 256
    jobs_kept: int = 256


@dataclass
class Job:
    id: str
    kind: str
    state: str = "queued"            # queued, running, done, failed
    step: int = 0
    steps: int = 0
    passes: int = 0
    results: List[str] = field(default_factory=list)
    error: Optional[str] = None

    def to_json(self) -> Dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "state": self.state, "step": self.step, "steps": self.steps,
                "passes": self.passes, "results": self.results, "error": self.error}


class Worker:
    """One sampling thread and a bounded queue: submit() raises queue.Full when busy."""

    def __init__(self, queue_size: int, jobs_kept: int):
        self.jobs: "OrderedDict[str, Job]" = OrderedDict()
        self._queue: "queue.Queue" = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()
        self._jobs_kept = jobs_kept
        self._thread = threading.Thread(target=self._loop, name="smdim-studio-worker", daemon=True)
        self._thread.start()

    def submit(self, kind: str, work: Callable[[Job], List[str]]) -> Job:
        job = Job(uuid.uuid4().hex[:12], kind)
        self._queue.put_nowait((job, work))          # raises queue.Full
        with self._lock:
            self.jobs[job.id] = job
            while len(self.jobs) > self._jobs_kept:
                self.jobs.popitem(last=False)
        return job

    def _loop(self):
        while True:
            job, work = self._queue.get()
            job.state = "running"
            try:
                job.results = work(job)
                job.state = "done"
            except PieceError as exc:
                job.error, job.state = str(exc), "failed"
            except Exception as exc:  # a sampling bug must not kill the worker; the page shows it
                job.error, job.state = f"sampling failed: {type(exc).__name__}: {exc}", "failed"


class BodyLimit:
    """ASGI middleware: a request body over `max_bytes` gets 413 — by its Content-Length before it is
    read, and while it is read when it comes without one (chunked), so no large body is ever held."""

    def __init__(self, app, max_bytes: int, message: str):
        self.app, self.max_bytes, self.message = app, max_bytes, message

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_bytes:
            return await JSONResponse({"detail": self.message}, status_code=413)(scope, receive, send)
        received = 0

        async def counted():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:          # answered 413 by FastAPI's exception middleware
                raise HTTPException(413, self.message)
            return message

        await self.app(scope, counted, send)


class Upload(BaseModel):
    name: str = Field(max_length=200)
    data: str                                     # base64 of the file's bytes


# The request's settings are editing.Settings' fields with its defaults (one home); pydantic checks
# the types, Settings' own checks answer 400 with their message.
SettingsIn = create_model("SettingsIn", **{f.name: (get_type_hints(Settings)[f.name], f.default)
                                           for f in fields(Settings)})


class JobIn(BaseModel):
    kind: str                                     # infill, continue, generate
    piece: Optional[str] = None
    style: Optional[str] = None
    first_bar: int = 0
    last_bar: int = 0
    tracks: Optional[List[int]] = None
    locked: List[int] = Field(default_factory=list, max_length=100000)
    bars: int = 4
    track: int = 0
    k: int = 1
    tokens: int = 512
    settings: SettingsIn = Field(default_factory=SettingsIn)


def create_app(models: Dict[str, Any], *, limits: Limits = Limits(), corpus_pieces=None) -> FastAPI:
    """The studio app. models: style name -> loaded run (pipeline.Run or anything with model,
    tokenizer, seq_len), the first one is the default. corpus_pieces: optional callable
    (style) -> [(name, token ids)] offered as starting points; it raises CorpusPreparing while a
    style's pieces are not ready (studio.corpus.HeldOutPieces)."""
    if not models:
        raise ValueError("the studio needs at least one model")
    app = FastAPI(title="smdim studio", docs_url=None, redoc_url=None)
    pieces: "OrderedDict[str, StudioPiece]" = OrderedDict()
    worker = Worker(limits.queue_size, limits.jobs_kept)
    default_style = next(iter(models))
    lock = threading.Lock()

    def keep(piece: StudioPiece) -> str:
        pid = uuid.uuid4().hex[:12]
        with lock:
            pieces[pid] = piece
            while len(pieces) > limits.pieces_kept:
                pieces.popitem(last=False)
        return pid

    def get_piece(pid: Optional[str]) -> StudioPiece:
        with lock:
            piece = pieces.get(pid or "")
        if piece is None:
            raise HTTPException(404, "that piece is no longer on the server; upload or generate it again")
        return piece

    def run_of(style: Optional[str]):
        style = style or default_style
        if style not in models:
            raise HTTPException(400, f"unknown style {style!r}; this studio has {', '.join(models)}")
        return models[style]

    @app.exception_handler(PieceError)
    async def piece_error(request: Request, exc: PieceError):
        return JSONResponse({"detail": str(exc)}, status_code=400)

    # base64 adds a third; the JSON around it is small
    app.add_middleware(BodyLimit, max_bytes=limits.max_upload_bytes * 4 // 3 + 4096,
                       message=f"the upload is too large: at most {limits.max_upload_bytes // 1024} KB")

    @app.get("/", response_class=HTMLResponse)
    def index():
        return resources.files(__package__).joinpath(STATIC, "index.html").read_text()

    @app.get("/static/{name}")
    def static(name: str):
        files = {"studio.js": "text/javascript", "studio.css": "text/css"}
        if name not in files:                     # a fixed list: no client path reaches the disk
            raise HTTPException(404, "not found")
        return Response(resources.files(__package__).joinpath(STATIC, name).read_bytes(), media_type=files[name])

    @app.get("/api/info")
    def info():
        styles = [{"name": name, "training_length": int(run.seq_len)} for name, run in models.items()]
        return {"styles": styles, "default_style": default_style, "max_variations": MAX_VARIATIONS,
                "max_upload_bytes": limits.max_upload_bytes, "max_tokens": limits.max_tokens,
                "defaults": asdict(Settings()), "corpus": bool(corpus_pieces)}

    @app.get("/api/corpus")
    def corpus(style: Optional[str] = None):
        """The pieces offered for `style`; while they are prepared: none, with a note (poll again)."""
        if corpus_pieces is None:
            return {"pieces": []}
        run_of(style)
        try:
            offered = corpus_pieces(style or default_style)
        except CorpusPreparing as exc:
            return {"pieces": [], "preparing": True, "note": str(exc)}
        answer = {"pieces": [{"index": i, "name": name} for i, (name, _) in enumerate(offered)]}
        note = getattr(corpus_pieces, "note", None)        # why a style offers none (HeldOutPieces)
        if not offered and note is not None and note(style or default_style):
            answer["note"] = note(style or default_style)
        return answer

    @app.post("/api/corpus/{index}")
    def corpus_piece(index: int, style: Optional[str] = None):
        from .piece import TrackInfo, from_ids

        run = run_of(style)
        try:
            offered = corpus_pieces(style or default_style) if corpus_pieces else []
        except CorpusPreparing as exc:
            raise HTTPException(409, str(exc)) from None
        if not 0 <= index < len(offered):
            raise HTTPException(404, "no such corpus piece")
        name, ids = offered[index]
        piece = from_ids(run.tokenizer, ids, name=name, tracks=[TrackInfo("piano", 0)], max_tokens=limits.max_tokens)
        return {"id": keep(piece), "piece": piece.to_json()}

    @app.post("/api/upload")
    def upload(body: Upload, style: Optional[str] = None):
        run = run_of(style)
        try:
            data = base64.b64decode(body.data, validate=True)
        except (binascii.Error, ValueError):
            raise HTTPException(400, "the upload is not base64 data") from None
        if len(data) > limits.max_upload_bytes:
            raise HTTPException(413, f"the upload is too large: at most {limits.max_upload_bytes // 1024} KB")
        piece = from_midi(run.tokenizer, data, name=body.name, max_tokens=limits.max_tokens)
        return {"id": keep(piece), "piece": piece.to_json()}

    @app.get("/api/pieces/{pid}")
    def piece_json(pid: str):
        return {"id": pid, "piece": get_piece(pid).to_json()}

    @app.get("/api/pieces/{pid}/midi")
    def piece_midi(pid: str):
        piece = get_piece(pid)
        return Response(piece.midi_bytes(), media_type="audio/midi",
                        headers={"Content-Disposition": f'attachment; filename="{_file_name(piece)}.mid"'})

    @app.get("/api/pieces/{pid}/wav")
    def piece_wav(pid: str, download: bool = False):
        from ..audio import AudioUnavailable, render, wav_bytes

        piece = get_piece(pid)
        try:
            audio = render(piece.to_score())
        except AudioUnavailable as exc:
            raise HTTPException(503, str(exc)) from None
        headers = {"Content-Disposition": f'attachment; filename="{_file_name(piece)}.wav"'} if download else {}
        return Response(wav_bytes(audio), media_type="audio/wav", headers=headers)

    @app.post("/api/jobs", status_code=202)
    def submit(body: JobIn):
        run = run_of(body.style)
        settings = Settings(**body.settings.model_dump())
        piece = get_piece(body.piece) if body.kind in ("infill", "continue") else None

        def progress(job: Job):
            def on_step(done, steps):
                if done == 1:
                    job.passes += 1
                job.step, job.steps = done, steps
            return on_step

        if body.kind == "infill":
            def work(job):
                return [keep(p) for p in infill_piece(run, piece, body.first_bar, body.last_bar, tracks=body.tracks,
                                                      locked=body.locked, k=body.k, settings=settings,
                                                      on_step=progress(job))]
        elif body.kind == "continue":
            def work(job):
                return [keep(p) for p in continue_piece(run, piece, body.bars, k=body.k, track=body.track,
                                                        settings=settings, on_step=progress(job))]
        elif body.kind == "generate":
            def work(job):
                return [keep(p) for p in generate_piece(run, body.tokens, k=body.k, settings=settings,
                                                        on_step=progress(job))]
        else:
            raise HTTPException(400, f"unknown job kind {body.kind!r}; one of infill, continue, generate")
        try:
            job = worker.submit(body.kind, work)
        except queue.Full:
            raise HTTPException(429, "the studio is busy with other requests; try again in a moment") from None
        return job.to_json()

    @app.get("/api/jobs/{jid}")
    def job_state(jid: str):
        job = worker.jobs.get(jid)
        if job is None:
            raise HTTPException(404, "no such job")
        return job.to_json()

    app.state.worker = worker
    app.state.pieces = pieces
    return app


def _file_name(piece: StudioPiece) -> str:
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in piece.name.rsplit(".mid", 1)[0])
    return safe.strip("_")[:80] or "piece"


def serve(app: FastAPI, sock, *, log_level: str = "warning") -> None:
    """Serve `app` on a bound socket until interrupted (uvicorn; at most 64 connections at once,
    more get 503)."""
    import uvicorn

    config = uvicorn.Config(app, log_level=log_level, limit_concurrency=64, timeout_keep_alive=5)
    uvicorn.Server(config).run(sockets=[sock])

"""Shared by the studio tests: a two-track MIDI file and an untrained tiny model (the mechanics —
what is kept, what is redrawn — do not depend on training)."""
import base64
import contextlib
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from types import SimpleNamespace

import torch
from symusic import Note, Score, Tempo, TimeSignature, Track

from smdim.model import SMDIM, preset_config
from smdim.tokenizer import make_tokenizer, mask_id, pad_id, vocab_size


def two_track_midi(bars=8) -> bytes:
    """Melody (program 73, flute) in quarters and chords (program 0) on every half bar; 4/4 then 3/4."""
    score = Score(480)
    score.tempos.append(Tempo(0, 100.0))
    score.time_signatures.append(TimeSignature(0, 4, 4))
    score.time_signatures.append(TimeSignature(4 * 1920, 3, 4))
    melody, chords = Track(name="flute", program=73), Track(name="piano", program=0)
    t = 0
    for bar in range(bars):
        length = 1920 if bar < 4 else 1440
        for beat in range(0, length, 480):
            melody.notes.append(Note(t + beat, 400, 72 + (bar * 2 + beat // 480) % 12, 90))
        for half in range(0, length, 960):
            for interval in (0, 4, 7):
                chords.notes.append(Note(t + half, 900, 48 + bar % 5 + interval, 60))
        t += length
    score.tracks.extend([melody, chords])
    return score.dumps_midi()


def tiny_run(seq_len=96):
    tok = make_tokenizer()
    torch.manual_seed(0)
    model = SMDIM(preset_config("tiny", vocab_size(tok), pad_id(tok), mask_id(tok))).eval()
    return SimpleNamespace(model=model, tokenizer=tok, seq_len=seq_len)


class SlowModel(torch.nn.Module):
    """A model that takes `delay` seconds per call (to keep the studio's worker busy in tests)."""

    def __init__(self, model, delay):
        super().__init__()
        self.inner, self.delay = model, delay

    def forward(self, x):
        import time

        time.sleep(self.delay)
        return self.inner(x)


@contextlib.contextmanager
def running(app):
    """Serve `app` on a free loopback port in a thread; yields its base URL."""
    import uvicorn

    sock = socket.create_server(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", limit_concurrency=64))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the studio server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def request(base, path, body=None, method=None):
    """(status, parsed JSON or raw bytes) of one HTTP request; never raises on HTTP errors."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method or ("POST" if body is not None else "GET"),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as res:
            status, raw, kind = res.status, res.read(), res.headers.get("Content-Type", "")
    except urllib.error.HTTPError as err:
        status, raw, kind = err.code, err.read(), err.headers.get("Content-Type", "")
    return status, (json.loads(raw) if "json" in kind else raw)


def upload(base, data, name="song.mid"):
    return request(base, "/api/upload", {"name": name, "data": base64.b64encode(data).decode()})


def wait_job(base, job, timeout=120):
    deadline = time.monotonic() + timeout
    while job["state"] in ("queued", "running"):
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job['id']} did not finish in {timeout} s")
        time.sleep(0.05)
        status, job = request(base, f"/api/jobs/{job['id']}")
        assert status == 200
    return job

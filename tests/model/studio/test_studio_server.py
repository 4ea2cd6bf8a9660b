"""smdim.studio.server over real HTTP on loopback: uploads checked by parsing, limits, jobs with
progress, MIDI/WAV downloads, and a bounded queue that answers 'busy' instead of falling over."""
import struct
import threading
from collections import Counter

import pytest
from symusic import Score

from smdim.studio.server import Limits, create_app

from studio_helpers import SlowModel, request, running, tiny_run, two_track_midi, upload, wait_job


@pytest.fixture(scope="module")
def run():
    return tiny_run()


@pytest.fixture(scope="module")
def base(run):
    def pieces(style):
        return [("corpus piece", list(run.piece_ids))]

    from smdim.tokenizer import encode

    run.piece_ids = encode(run.tokenizer, Score.from_midi(two_track_midi()))
    with running(create_app({"tiny": run}, limits=Limits(max_upload_bytes=64 * 1024, max_tokens=4096),
                            corpus_pieces=pieces)) as url:
        yield url


def test_page_and_info(base):
    status, page = request(base, "/")
    assert status == 200 and b"smdim studio" in page and b"/static/studio.js" in page
    assert request(base, "/static/studio.js")[0] == 200
    for path in ("/static/../server.py", "/static/%2e%2e%2fserver.py", "/static/index.html"):
        assert request(base, path)[0] == 404
    status, info = request(base, "/api/info")
    assert status == 200 and info["styles"] == [{"name": "tiny", "training_length": 96}]


def test_upload_keeps_tracks(base):
    status, body = upload(base, two_track_midi())
    assert status == 200
    piece = body["piece"]
    assert [t["program"] for t in piece["tracks"]] == [73, 0] and len(piece["bars"]) == 8
    assert Counter(n["track"] for n in piece["notes"]) == {0: 28, 1: 48}


@pytest.mark.parametrize("data,status,words", [
    (b"hello, this is text", 400, "not a MIDI file"),
    (b"MThd\x00\x00\x00\x06\x00\x01\x00\x01\x01\xe0MTrk\xff\xff\xff\xff", 400, "not a readable MIDI file"),
    (b"MThd" + b"\x00" * (70 * 1024), 413, "too large"),
])
def test_bad_uploads_are_refused_in_plain_words(base, data, status, words):
    got, body = upload(base, data, name="bad.mid")
    assert got == status and words in body["detail"]


def test_a_chunked_upload_without_length_is_cut_off_at_the_limit(base):
    import http.client
    import json
    from urllib.parse import urlparse

    url = urlparse(base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    body = b"x" * (200 * 1024)     # not even JSON: refused by its size while it streams, before any parsing
    chunks = (body[i:i + 8192] for i in range(0, len(body), 8192))
    conn.request("POST", "/api/upload", body=chunks, headers={"Content-Type": "application/json"},
                 encode_chunked=True)
    res = conn.getresponse()
    assert res.status == 413 and "too large" in json.loads(res.read())["detail"]
    assert res.getheader("content-length") is not None
    conn.close()
    assert request(base, "/api/info")[0] == 200                  # and the server goes on answering


def test_corpus_being_prepared_is_said_and_refused_until_ready(run):
    from smdim.studio.corpus import CorpusPreparing

    def pieces(style):
        raise CorpusPreparing("preparing the held-out tiny pieces...")

    with running(create_app({"tiny": run}, corpus_pieces=pieces)) as url:
        status, body = request(url, "/api/corpus")
        assert status == 200 and body == {"pieces": [], "preparing": True,
                                          "note": "preparing the held-out tiny pieces..."}
        status, body = request(url, "/api/corpus/0", {})
        assert status == 409 and "preparing" in body["detail"]
    # a style whose corpus could not be loaded says why
    from smdim.studio.corpus import HeldOutPieces

    bare = tiny_run()
    bare.record = None
    held_out = HeldOutPieces({"tiny": bare}, start=False)
    held_out.prepare("tiny")
    with running(create_app({"tiny": bare}, corpus_pieces=held_out)) as url:
        status, body = request(url, "/api/corpus")
        assert status == 200 and body["pieces"] == [] and "records no data split" in body["note"]


def test_not_base64_and_unknown_piece(base):
    status, body = request(base, "/api/upload", {"name": "x.mid", "data": "%%%"})
    assert status == 400 and "base64" in body["detail"]
    status, body = request(base, "/api/jobs", {"kind": "infill", "piece": "nope", "first_bar": 0, "last_bar": 0})
    assert status == 404 and "no longer on the server" in body["detail"]
    assert request(base, "/api/pieces/../../etc/passwd/midi")[0] == 404


def test_infill_job_keeps_notes_outside_and_serves_midi_and_wav(base):
    _, body = upload(base, two_track_midi())
    pid, piece = body["id"], body["piece"]
    locked = [n["id"] for n in piece["notes"] if piece["bars"][2]["time"] <= n["time"] < piece["bars"][3]["time"]][:3]
    status, job = request(base, "/api/jobs", {"kind": "infill", "piece": pid, "first_bar": 2, "last_bar": 3,
                                              "tracks": [1], "locked": locked, "settings": {"steps": 4, "seed": 1}})
    assert status == 202
    job = wait_job(base, job)
    assert job["state"] == "done" and job["steps"] == 4 and job["step"] >= 1 and len(job["results"]) == 1
    _, out = request(base, f"/api/pieces/{job['results'][0]}")
    start, stop = piece["bars"][2]["time"], piece["bars"][4]["time"]
    def key(n):
        return (n["time"], n["pitch"], n["duration"], n["track"])

    keep = Counter(key(n) for n in piece["notes"]
                   if not start <= n["time"] < stop or n["track"] == 0 or n["id"] in locked)
    assert not keep - Counter(key(n) for n in out["piece"]["notes"])
    status, midi = request(base, f"/api/pieces/{job['results'][0]}/midi")
    assert status == 200 and Score.from_midi(midi).note_num() == len(out["piece"]["notes"])
    status, wav = request(base, f"/api/pieces/{job['results'][0]}/wav")
    assert status == 200 and wav[:4] == b"RIFF" and wav[8:12] == b"WAVE"
    samples = struct.unpack(f"<{(len(wav) - 44) // 2}h", wav[44:44 + (len(wav) - 44) // 2 * 2])
    assert max(abs(s) for s in samples) > 1000


def test_continue_generate_corpus_and_errors(base):
    _, body = upload(base, two_track_midi())
    status, job = request(base, "/api/jobs", {"kind": "continue", "piece": body["id"], "bars": 2, "k": 2,
                                              "settings": {"steps": 3}})
    job = wait_job(base, job)
    assert job["state"] == "done" and len(job["results"]) == 2
    status, corpus = request(base, "/api/corpus")
    assert corpus["pieces"] == [{"index": 0, "name": "corpus piece"}]
    status, opened = request(base, "/api/corpus/0", {})
    assert status == 200 and len(opened["piece"]["bars"]) == 8
    assert request(base, "/api/corpus/5", {})[0] == 404
    for bad, words in [({"kind": "dance"}, "unknown job kind"),
                       ({"kind": "generate", "settings": {"steps": 0}}, "steps must be"),
                       ({"kind": "generate", "style": "jazz"}, "unknown style"),
                       ({"kind": "generate", "k": 99}, None)]:
        status, body2 = request(base, "/api/jobs", bad)
        if words is None:      # accepted, then fails in the worker with a message
            job = wait_job(base, body2)
            assert job["state"] == "failed" and "variations must be" in job["error"]
        else:
            assert status == 400 and words in body2["detail"], body2
    status, job = request(base, "/api/jobs", {"kind": "infill", "piece": body["id"], "first_bar": 7, "last_bar": 9})
    job = wait_job(base, job)
    assert job["state"] == "failed" and "select bars between 1 and 8" in job["error"]


def test_busy_queue_answers_429_and_the_server_survives_a_burst(run):
    """20 concurrent job requests against a queue of 2 with a slow model: each answer is 202 or 429
    (never 5xx or a dropped connection); afterwards the server still answers and finishes its jobs."""
    from types import SimpleNamespace

    slow = SimpleNamespace(model=SlowModel(run.model, 0.05), tokenizer=run.tokenizer, seq_len=run.seq_len)
    with running(create_app({"tiny": slow}, limits=Limits(queue_size=2))) as url:
        statuses, jobs = [], []

        def hit():
            status, body = request(url, "/api/jobs", {"kind": "generate", "tokens": 32, "settings": {"steps": 3}})
            statuses.append(status)
            if status == 202:
                jobs.append(body)
            else:
                assert "busy" in body["detail"]

        threads = [threading.Thread(target=hit) for _ in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert len(statuses) == 20 and set(statuses) <= {202, 429} and 429 in statuses and 202 in statuses
        assert request(url, "/api/info")[0] == 200
        for job in jobs:
            assert wait_job(url, job)["state"] in ("done", "failed")
        status, job = request(url, "/api/jobs", {"kind": "generate", "tokens": 32, "settings": {"steps": 2}})
        assert status == 202

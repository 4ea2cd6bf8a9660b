"""Offline audio (smdim.audio): timing, programs, drums, many tracks, loudness, WAV files, and the
message when the renderer is missing; `--wav` on the commands that write MIDI."""
import importlib.util
import sys
import wave

import numpy as np
import pytest
from symusic import Note, Score, Tempo, Track

from smdim import audio
from smdim.cli import main

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("tinysoundfont") is None,
    reason=f"tinysoundfont is not installed, so audio cannot be rendered: {audio.INSTALL_HINT}")

SR = audio.SAMPLE_RATE


def _score(*tracks, tpq=480, qpm=None):
    score = Score(tpq)
    if qpm is not None:
        score.tempos.append(Tempo(0, qpm))
    for program, is_drum, notes in tracks:
        track = Track("t", program=program, is_drum=is_drum)
        for time, duration, pitch, velocity in notes:
            track.notes.append(Note(time, duration, pitch, velocity))
        score.tracks.append(track)
    return score


def _rms(x):
    return float(np.sqrt(np.mean(np.square(x)))) if x.size else 0.0


def test_the_soundfont_is_read_from_the_installed_pretty_midi():
    path = audio.soundfont_path()
    assert path.name == "TimGM6mb.sf2" and "pretty_midi" in path.parts and path.stat().st_size > 5_000_000


def test_notes_sound_at_their_time_under_the_tempo():
    # One quarter note on beat 4 (0-based 3) at 60 qpm: silence for 3 s, sound at 3 s, then the release.
    samples = audio.render(_score((0, False, [(3 * 480, 480, 60, 100)]), qpm=60))
    assert samples.shape == (int(4.0 * SR) + int(audio.RELEASE_S * SR), 2) and samples.dtype == np.float32
    assert np.abs(samples[: int(2.99 * SR)]).max() == 0.0
    assert _rms(samples[int(3.0 * SR): int(3.5 * SR)]) > 0.01
    assert _rms(samples[-int(0.1 * SR):]) < 0.1 * _rms(samples[int(3.0 * SR): int(3.5 * SR)])


def test_a_silent_score_is_the_release_only():
    samples = audio.render(Score(480))
    assert samples.shape == (int(audio.RELEASE_S * SR), 2) and not samples.any()


def test_programs_and_drums_are_honoured():
    notes = [(i * 240, 240, 60 + i, 100) for i in range(8)]
    piano = audio.render(_score((0, False, notes)))
    strings = audio.render(_score((48, False, notes)))
    drums = audio.render(_score((0, True, [(i * 240, 120, 36, 100) for i in range(8)])))
    assert piano.shape == strings.shape
    assert not np.allclose(piano, strings, atol=1e-3)
    assert _rms(drums) > 0.005
    # A drum track is not its program played as pitch 36.
    assert not np.allclose(drums, audio.render(_score((0, False, [(i * 240, 120, 36, 100) for i in range(8)]))),
                           atol=1e-3)


def test_more_tracks_than_channels_all_sound():
    # 20 melodic tracks, each a single note at its own time: every one must be heard.
    tracks = [(p % 8 * 8, False, [(i * 960, 480, 48 + i, 100)]) for i, p in enumerate(range(20))]
    samples = audio.render(_score(*tracks, qpm=120))
    for i in range(20):
        start = int(i * 0.5 * SR) + 200
        assert _rms(samples[start: start + int(0.2 * SR)]) > 0.003, f"track {i} is silent"


def test_loud_pieces_are_scaled_below_full_scale_and_quiet_ones_kept():
    cluster = _score((48, False, [(0, 1920, p, 127) for p in range(36, 96)]))
    loud = audio.render(cluster)
    assert np.abs(loud).max() == pytest.approx(audio.PEAK, rel=1e-5)
    quiet = audio.render(_score((0, False, [(0, 480, 60, 20)])))
    assert 0 < np.abs(quiet).max() < audio.PEAK


def test_wav_file_is_16_bit_stereo_and_matches_the_samples(tmp_path):
    score = _score((0, False, [(0, 480, 60, 100), (480, 480, 64, 100)]))
    path = audio.render_wav(score, tmp_path / "a.wav")
    with wave.open(str(path)) as f:
        assert (f.getnchannels(), f.getsampwidth(), f.getframerate()) == (2, 2, SR)
        pcm = np.frombuffer(f.readframes(f.getnframes()), dtype="<i2").reshape(-1, 2)
    expected = audio.render(score)
    assert pcm.shape == expected.shape
    assert np.abs(pcm / 32767.0 - expected).max() < 2 / 32767


def test_missing_renderer_names_the_install_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "tinysoundfont", None)  # import fails as if not installed
    with pytest.raises(audio.AudioUnavailable, match="pip install --no-deps tinysoundfont"):
        audio.render(Score(480))


def test_missing_soundfont_names_the_package(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(audio.AudioUnavailable, match="pretty-midi"):
        audio.soundfont_path()


def test_wav_beside_every_midi_the_commands_write(checkpoint, tmp_path):
    song = tmp_path / "song.mid"
    _score((0, False, [(i * 480, 400, 60 + i % 8, 80) for i in range(24)])).dump_midi(str(song))
    runs = {
        "gen": ["generate", "--n", "2"],
        "infill": ["infill", "--midi", str(song), "--bars", "1", "2"],
        "cont": ["continue", "--midi", str(song), "--prefix-bars", "2", "--length", "120"],
    }
    for name, argv in runs.items():
        out = tmp_path / name
        assert main(["--threads", "1", *argv, "--checkpoint", str(checkpoint), "--steps", "2", "--out", str(out),
                     "--wav"]) == 0
        midis = sorted(out.glob("*.mid"))
        assert midis and sorted(p.with_suffix(".mid") for p in out.glob("*.wav")) == midis, name
        for path in out.glob("*.wav"):
            with wave.open(str(path)) as f:
                assert f.getnframes() >= int(audio.RELEASE_S * SR)


def test_wav_without_the_renderer_fails_before_sampling(checkpoint, tmp_path, monkeypatch, capsys):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "tinysoundfont" else real_find_spec(name, *a))
    out = tmp_path / "gen"
    assert main(["generate", "--checkpoint", str(checkpoint), "--out", str(out), "--wav"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install --no-deps tinysoundfont==0.3.7" in err
    assert not out.exists()

"""Offline audio: a symusic Score -> stereo samples -> WAV, rendered by tinysoundfont with the
General-MIDI soundfont that the pretty-midi wheel ships (read from the installed package at run
time, never copied). Each track keeps its program; drum tracks play on the GM drum channel.

tinysoundfont declares pyaudio, which it needs only for live playback and which does not build
here without portaudio's headers, hence the --no-deps install line in INSTALL_HINT."""
from __future__ import annotations

import importlib.util
import io
import wave
from pathlib import Path

import numpy as np

SAMPLE_RATE = 44100
PEAK = 0.89                  # -1 dBFS: loud pieces are scaled down to it, never clipped
RELEASE_S = 1.0              # silence after the last note-off, for the release tails
DRUM_CHANNEL = 9
INSTALL_HINT = "pip install --no-deps tinysoundfont==0.3.7 (audio; its pyaudio dependency is only for live playback)"


class AudioUnavailable(RuntimeError):
    """The renderer or the soundfont is not installed; the message says what to install."""


def soundfont_path() -> Path:
    """The GM soundfont inside the installed pretty-midi package."""
    spec = importlib.util.find_spec("pretty_midi")
    if spec is None or not spec.submodule_search_locations:
        raise AudioUnavailable("audio needs the pretty-midi package for its General-MIDI soundfont: "
                               "pip install pretty-midi==0.2.11.post0")
    path = Path(list(spec.submodule_search_locations)[0]) / "TimGM6mb.sf2"
    if not path.is_file():
        raise AudioUnavailable(f"the soundfont {path} is missing from the installed pretty-midi; reinstall it: "
                               "pip install --force-reinstall pretty-midi==0.2.11.post0")
    return path


def _synth(sample_rate):
    try:
        import tinysoundfont
    except ImportError as exc:
        raise AudioUnavailable(f"audio needs tinysoundfont: {INSTALL_HINT}") from exc
    synth = tinysoundfont.Synth(samplerate=sample_rate)
    return synth, synth.sfload(str(soundfont_path()))


def _channels(tracks):
    """A MIDI channel per track: drums on channel 9; melodic tracks on their own channel while
    there are channels left, then sharing the channel of a track with the same program (or the
    least used one), so more than 15 melodic tracks still all sound."""
    channels, programs, use = [], {}, {}
    free = [c for c in range(16) if c != DRUM_CHANNEL]
    for track in tracks:
        if track.is_drum:
            channels.append(DRUM_CHANNEL)
            continue
        if free:
            chan = free.pop(0)
        else:
            same = [c for c, p in programs.items() if p == track.program]
            chan = same[0] if same else min(programs, key=lambda c: use[c])
        programs.setdefault(chan, track.program)
        use[chan] = use.get(chan, 0) + 1
        channels.append(chan)
    return channels, programs


def render(score, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """score: symusic Score (any time unit) -> float32 samples (n, 2) in [-PEAK, PEAK].

    Notes are scheduled in seconds (tempo changes honoured); note-offs at a time come before the
    note-ons there so a repeated pitch re-strikes. The result is scaled down to PEAK when louder,
    left as rendered otherwise."""
    synth, sfid = _synth(sample_rate)
    seconds = score.to("second")
    tracks = [t for t in seconds.tracks if t.note_num()]
    channels, programs = _channels(tracks)
    for chan, program in programs.items():
        synth.program_select(chan, sfid, 0, int(program))
    if any(t.is_drum for t in tracks):
        synth.program_select(DRUM_CHANNEL, sfid, 128, 0, is_drums=True)
    events = []  # (sample, order, channel, pitch, velocity); order 0 = off, 1 = on
    for track, chan in zip(tracks, channels):
        for note in track.notes:
            start = int(round(note.time * sample_rate))
            end = max(start + 1, int(round((note.time + note.duration) * sample_rate)))
            events.append((start, 1, chan, int(note.pitch), int(note.velocity)))
            events.append((end, 0, chan, int(note.pitch), 0))
    events.sort()
    total = (events[-1][0] if events else 0) + int(RELEASE_S * sample_rate)
    out = np.zeros((total, 2), dtype=np.float32)
    now = 0
    for sample, is_on, chan, pitch, velocity in events:
        if sample > now:
            out[now:sample] = _generate(synth, sample - now)
            now = sample
        if is_on:
            synth.noteon(chan, pitch, max(1, min(127, velocity)))
        else:
            synth.noteoff(chan, pitch)
    if total > now:
        out[now:] = _generate(synth, total - now)
    peak = float(np.abs(out).max()) if out.size else 0.0
    if peak > PEAK:
        out *= PEAK / peak
    return out


def _generate(synth, n):
    return np.frombuffer(synth.generate_simple(n), dtype=np.float32).reshape(n, 2)


def wav_bytes(samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> bytes:
    """Float samples (n, 2) in [-1, 1] -> the bytes of a 16-bit PCM stereo WAV file."""
    pcm = np.clip(np.round(samples * 32767.0), -32768, 32767).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as f:
        f.setnchannels(2)
        f.setsampwidth(2)
        f.setframerate(sample_rate)
        f.writeframes(pcm.tobytes())
    return buffer.getvalue()


def write_wav(samples: np.ndarray, path, sample_rate: int = SAMPLE_RATE) -> Path:
    """Float samples (n, 2) in [-1, 1] -> 16-bit PCM stereo WAV at `path`."""
    path = Path(path)
    path.write_bytes(wav_bytes(samples, sample_rate))
    return path


def render_wav(score, path, sample_rate: int = SAMPLE_RATE) -> Path:
    """Render `score` and write it to `path` (see render, write_wav)."""
    return write_wav(render(score, sample_rate), path, sample_rate)


def check_available():
    """Raise AudioUnavailable (with the install line) before any work when audio cannot be made."""
    soundfont_path()
    if importlib.util.find_spec("tinysoundfont") is None:
        raise AudioUnavailable(f"--wav needs tinysoundfont: {INSTALL_HINT}")

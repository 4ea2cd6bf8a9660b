"""Where the music comes from: corpus layouts, file discovery and parsing into symusic Scores.

Layouts (`detect_layout` picks one from a path; `layout=` overrides):

* ``"han"``     the Han Chinese folk songs of the Essen collection (``essenFolksong/han1.abc`` and
                ``han2.abc``), read at run time from the installed music21 package;
* ``"music21"`` another named corpus of the installed music21 ("palestrina", "bach", "irish", ...;
                see `smdim.music21_corpora.NAMED_CORPORA`);
* ``"scores"``  any folder of score files (.krn, .mxl, .xml, .musicxml, .mei), converted with music21;
* ``"abc"``     any .abc file or folder of .abc files (each tune, i.e. each ``X:`` header, is a piece);
* ``"midi"``    any .mid/.midi file or folder of them (searched recursively);
* ``"maestro"`` MAESTRO v3: ``maestro-v3.0.0.csv`` (or ``.json``) with ``split`` and ``midi_filename``
                columns; its train/validation/test split is used;
* ``"pop909"``  POP909: one folder per song, ``NNN/NNN.mid`` (the ``versions/`` sub-folders are ignored).

Nothing here tokenizes; `smdim.data` turns the items into token ids and caches them.
"""
from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple, Union

from symusic import Score

from smdim import music21_corpora
from smdim.music21_corpora import SCORE_SUFFIXES

__all__ = [
    "LAYOUTS",
    "HAN_NAMES",
    "MIDI_SUFFIXES",
    "SourceItem",
    "han_abc_paths",
    "split_abc_tunes",
    "parse_abc",
    "parse_abc_tunes",
    "detect_layout",
    "list_items",
    "load_score",
]

LAYOUTS = ("han", "music21", "abc", "midi", "scores", "maestro", "pop909")
#: source strings that mean the embedded Han folk-song corpus
HAN_NAMES = ("han", "default", "essen-han", "folk")
MIDI_SUFFIXES = (".mid", ".midi")
_SPLIT_NAMES = {"train": "train", "training": "train", "validation": "valid", "valid": "valid",
                "val": "valid", "dev": "valid", "test": "test", "testing": "test"}
_POP909_DIR = re.compile(r"^\d{3}$")


@dataclass(frozen=True)
class SourceItem:
    """One piece to load: a MIDI file, or one tune (`abc_text`) of an ABC file."""

    name: str                       # display name: relative path, "+#X" for ABC tunes
    path: str                       # the file it comes from
    split: Optional[str] = None     # "train" / "valid" / "test" from dataset metadata, else None
    abc_text: Optional[str] = None  # the tune's text for ABC sources

    @property
    def is_score_file(self) -> bool:
        """A score file (kern, MusicXML, MEI) that music21 converts (slow: parsed in worker processes)."""
        return self.abc_text is None and Path(self.path).suffix.lower() in SCORE_SUFFIXES


# --------------------------------------------------------------------------------------------
# the embedded Han corpus and ABC files
# --------------------------------------------------------------------------------------------
def han_abc_paths() -> List[Path]:
    """Paths of ``essenFolksong/han1.abc`` and ``han2.abc`` inside the installed music21."""
    paths = music21_corpora.corpus_files("han")
    if len(paths) != 2:
        raise FileNotFoundError("music21's corpus lacks essenFolksong/han1.abc or han2.abc")
    return paths


def split_abc_tunes(text: str) -> List[str]:
    """The tunes of an ABC file, one string per ``X:`` header; the file header (fields before
    the first tune) is prepended to every tune."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    chunks = re.split(r"(?m)^(?=X:)", text)
    header = ""
    if chunks and not chunks[0].startswith("X:"):
        header_lines = [ln for ln in chunks[0].splitlines() if re.match(r"^[A-Za-z]:", ln)]
        header = "\n".join(header_lines) + ("\n" if header_lines else "")
        chunks = chunks[1:]
    tunes = []
    for chunk in chunks:
        if not chunk.strip():
            continue
        if header:
            first, _, rest = chunk.partition("\n")
            chunk = first + "\n" + header + rest
        tunes.append(chunk.rstrip() + "\n")
    return tunes


@contextlib.contextmanager
def _quiet_native_output() -> Iterator[None]:
    """Silence C-level stdout/stderr (symusic's ABC reader prints one line per odd bar)."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        saved = (os.dup(1), os.dup(2))
    except (OSError, ValueError, AttributeError):  # no real fds (embedded interpreters)
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        yield
    finally:
        try:
            import ctypes

            ctypes.CDLL(None).fflush(None)
        except Exception:  # pragma: no cover - platform without libc symbols
            pass
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)


def parse_abc(text: str) -> Score:
    """One ABC tune -> Score (symusic; its console chatter suppressed)."""
    with _quiet_native_output():
        return Score.from_abc(text)


def _abc2midi_binary() -> Optional[Path]:
    exe = os.environ.get("SYMUSIC_ABC2MIDI")  # set by symusic when it is imported
    return Path(exe) if exe and Path(exe).is_file() and os.access(exe, os.X_OK) else None


def parse_abc_tunes(tunes: Sequence[str]) -> List[Union[Score, Exception]]:
    """Many ABC tunes -> one Score (or the parse error) per tune.

    symusic converts ABC with the abc2midi program it ships, one process per tune; with big
    interpreters (torch, test runners) each process start costs several milliseconds. Here the
    tunes go through one abc2midi run (tunes renumbered X:1..X:n, one MIDI file each), which gives
    the same Scores as `Score.from_abc` (checked on the Han corpus) in a fraction of the time.
    abc2midi stops at some malformed tunes and writes nothing for the rest, so the tunes left
    without a file run again as a new batch, and a tune that blocks a batch is parsed alone
    (`parse_abc`); every round settles at least one tune. Falls back to `parse_abc` per tune
    when the program is not available or fails.
    """
    exe = _abc2midi_binary()
    if exe is None or not tunes:
        return [_try_parse_abc(t) for t in tunes]
    out: List[Optional[Union[Score, Exception]]] = [None] * len(tunes)
    pending = list(range(len(tunes)))
    while pending:
        batch = _abc2midi_batch(exe, [tunes[i] for i in pending])
        if batch is None:  # the program itself failed
            for i in pending:
                out[i] = _try_parse_abc(tunes[i])
            break
        left = []
        for i, result in zip(pending, batch):
            if result is None:
                left.append(i)
            else:
                out[i] = result
        if left and left[0] == pending[0]:  # the first tune got nothing: parse it alone
            out[left[0]] = _try_parse_abc(tunes[left[0]])
            left = left[1:]
        pending = left
    return out


def _abc2midi_batch(exe: Path, tunes: Sequence[str]) -> Optional[List[Optional[Union[Score, Exception]]]]:
    """One abc2midi run over `tunes`: per tune its Score, its read error, or None when no MIDI file
    was written; None when the program could not run."""
    out: List[Optional[Union[Score, Exception]]] = []
    with tempfile.TemporaryDirectory(prefix="smdim-abc-") as tmp:
        body = "\n".join(re.sub(r"^X:[^\n]*", f"X:{i + 1}", t.lstrip(), count=1).rstrip() + "\n"
                         for i, t in enumerate(tunes))
        Path(tmp, "tunes.abc").write_text(body, encoding="utf-8")
        try:
            subprocess.run([str(exe), "tunes.abc", "-silent"], cwd=tmp, stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           timeout=60 + 0.5 * len(tunes), check=False)
        except (OSError, subprocess.SubprocessError):
            return None
        for i, tune in enumerate(tunes):
            midi = Path(tmp, f"tunes{i + 1}.mid")
            if not tune.lstrip().startswith("X:"):
                out.append(_try_parse_abc(tune))
            elif not midi.is_file():
                out.append(None)
            else:
                try:
                    out.append(Score.from_midi(midi.read_bytes()))
                except Exception as exc:
                    out.append(exc)
    return out


def _try_parse_abc(text: str) -> Union[Score, Exception]:
    try:
        return parse_abc(text)
    except Exception as exc:
        return exc


def _abc_items(files: Sequence[Path], root: Optional[Path]) -> List[SourceItem]:
    items = []
    for f in files:
        text = Path(f).read_text(encoding="utf-8", errors="replace")
        rel = _rel(f, root)
        for tune in split_abc_tunes(text):
            m = re.match(r"X:\s*(\S*)", tune)
            ref = m.group(1) if m and m.group(1) else str(len(items))
            items.append(SourceItem(name=f"{rel}#{ref}", path=str(f), abc_text=tune))
    return items


# --------------------------------------------------------------------------------------------
# layouts
# --------------------------------------------------------------------------------------------
def _rel(path: Path, root: Optional[Path]) -> str:
    path = Path(path)
    if root is not None:
        try:
            return path.relative_to(root).as_posix()
        except ValueError:
            pass
    return path.name


def _find(root: Path, suffixes: Sequence[str]) -> List[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for fn in sorted(filenames):
            if fn.lower().endswith(tuple(suffixes)) and not fn.startswith("."):
                out.append(Path(dirpath) / fn)
    return out


def _maestro_metadata(root: Path) -> Optional[Path]:
    """The MAESTRO metadata file in `root` (csv preferred over json), or None."""
    for pattern in ("maestro-v*.csv", "maestro*.csv", "maestro-v*.json", "maestro*.json"):
        found = sorted(root.glob(pattern), reverse=True)  # newest version first
        if found:
            return found[0]
    return None


def _pop909_root(root: Path) -> Optional[Path]:
    for cand in (root, root / "POP909"):
        if not cand.is_dir():
            continue
        dirs = [d for d in cand.iterdir() if d.is_dir() and _POP909_DIR.match(d.name)]
        if dirs and sum((d / f"{d.name}.mid").is_file() for d in dirs) * 2 >= len(dirs):
            return cand
    return None


def detect_layout(source: Union[str, Path, None]) -> str:
    """The layout of `source` (see module doc). Raises FileNotFoundError for a missing path or
    a folder without music files."""
    if source is None or (isinstance(source, str) and source.lower() in HAN_NAMES
                          and not Path(source).exists()):
        return "han"
    named = music21_corpora.source_name(source)
    if named is not None:
        return "han" if named == "han" else "music21"
    path = Path(source).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"no such file or folder: {path}")
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in MIDI_SUFFIXES:
            return "midi"
        if suffix == ".abc":
            return "abc"
        if suffix in SCORE_SUFFIXES:
            return "scores"
        if suffix in (".csv", ".json") and path.name.lower().startswith("maestro"):
            return "maestro"
        raise FileNotFoundError(f"{path} is not a .mid/.midi/.abc/score file or a MAESTRO metadata file")
    if _maestro_metadata(path) is not None:
        return "maestro"
    if _pop909_root(path) is not None:
        return "pop909"
    if _find(path, MIDI_SUFFIXES):
        return "midi"
    if _find(path, (".abc",)):
        return "abc"
    if _find(path, SCORE_SUFFIXES):
        return "scores"
    raise FileNotFoundError(f"no .mid/.midi/.abc/.krn/.mxl/.xml files under {path}")


def _read_maestro_rows(meta: Path) -> List[dict]:
    if meta.suffix.lower() == ".csv":
        with meta.open(newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))
    data = json.loads(meta.read_text(encoding="utf-8"))
    if isinstance(data, list):  # records
        return [dict(r) for r in data]
    if isinstance(data, dict):  # pandas "columns" orientation: {column: {row: value}}
        columns = {k: v for k, v in data.items() if isinstance(v, dict)}
        keys = sorted({r for col in columns.values() for r in col}, key=lambda r: (len(str(r)), str(r)))
        return [{c: columns[c].get(r) for c in columns} for r in keys]
    raise ValueError(f"unrecognised MAESTRO metadata in {meta}")


def _maestro_items(path: Path) -> Tuple[List[SourceItem], List[str]]:
    meta = path if path.is_file() else _maestro_metadata(path)
    if meta is None:
        raise FileNotFoundError(f"no maestro-v*.csv / .json metadata in {path}")
    root = meta.parent
    rows = _read_maestro_rows(meta)
    if rows and ("midi_filename" not in rows[0]):
        raise ValueError(f"{meta} has no 'midi_filename' column")
    items, missing = [], []
    for row in rows:
        rel = str(row.get("midi_filename") or "").strip()
        if not rel:
            continue
        split = _SPLIT_NAMES.get(str(row.get("split") or "").strip().lower())
        f = root / rel
        if not f.is_file():
            missing.append(rel)
            continue
        items.append(SourceItem(name=rel, path=str(f), split=split))
    return items, missing


def _pop909_items(path: Path) -> List[SourceItem]:
    root = _pop909_root(path)
    if root is None:
        raise FileNotFoundError(f"no POP909 song folders (NNN/NNN.mid) in {path}")
    items = []
    for d in sorted(d for d in root.iterdir() if d.is_dir() and _POP909_DIR.match(d.name)):
        f = d / f"{d.name}.mid"
        if f.is_file():
            items.append(SourceItem(name=f"{d.name}/{f.name}", path=str(f)))
    return items


def list_items(source: Union[str, Path, None], layout: str = "auto") -> Tuple[str, List[SourceItem], List[str]]:
    """(layout, items, missing): the pieces of `source` in `layout` ("auto" detects it) and the
    files named by metadata but absent."""
    if layout == "auto":
        layout = detect_layout(source)
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; expected one of {LAYOUTS} or 'auto'")
    if layout == "han":
        return layout, _abc_items(han_abc_paths(), None), []
    if layout == "music21":
        name = music21_corpora.source_name(source)
        if name is None:
            raise ValueError(f"layout 'music21' needs a corpus name ({', '.join(music21_corpora.NAMED_CORPORA)}); "
                             f"got {source!r}")
        root = music21_corpora.music21_corpus_root()
        files = music21_corpora.corpus_files(name, root)
        if music21_corpora.named_corpus(name).kind == "abc":
            return layout, _abc_items(files, root), []
        return layout, [SourceItem(name=_rel(f, root), path=str(f)) for f in files], []
    path = Path(source).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"no such file or folder: {path}")
    if layout == "abc":
        files = [path] if path.is_file() else _find(path, (".abc",))
        return layout, _abc_items(files, None if path.is_file() else path), []
    if layout in ("midi", "scores"):
        files = [path] if path.is_file() else _find(path, MIDI_SUFFIXES if layout == "midi" else SCORE_SUFFIXES)
        root = path.parent if path.is_file() else path
        return layout, [SourceItem(name=_rel(f, root), path=str(f)) for f in files], []
    if layout == "maestro":
        items, missing = _maestro_items(path)
        return layout, items, missing
    return layout, _pop909_items(path), []


def load_score(item: SourceItem, convert_cache: Union[str, Path, None] = None) -> Score:
    """Parse one item (raises on unreadable data); score files go through music21, their MIDI
    kept in `convert_cache` when given."""
    if item.abc_text is not None:
        return parse_abc(item.abc_text)
    if item.is_score_file:
        return music21_corpora.load_score_file(item.path, convert_cache)
    data = Path(item.path).read_bytes()
    return Score.from_midi(data, sanitize_data=True)

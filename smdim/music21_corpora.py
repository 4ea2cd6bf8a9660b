"""The named corpora of the installed music21 package, and converting score files to MIDI.

    NAMED_CORPORA["palestrina"]        # NamedCorpus: style, the music21 folders it reads
    files = corpus_files("polyphony")  # its score files (a union of palestrina, monteverdi, trecento)
    score = load_score_file(path, convert_cache="~/.cache/smdim/converted")

The corpora are read from the installed music21 at run time and never copied (their licences allow
distribution inside music21). Score files (Humdrum .krn, MusicXML .mxl/.xml/.musicxml, MEI) are
parsed with music21 and written to MIDI, which symusic reads; music21 is slow (about 0.4 s per
chorale, 15 s per quartet), so each converted file is cached on disk (`convert_cache`), a failure
too, and an interrupted conversion continues where it stopped. music21's own parse cache is a pickle
store, so it is bypassed: nothing loaded here can run code.

Multi-voice scores become one token stream by the tokenizer's merge rule (measured on 16 Palestrina
masses, 8 Bach chorales and 4 Trecento pieces: Program-per-voice sequences are 25-29 % longer, and
music21's MIDI gives every voice program 0, so programs would not even tell the voices apart; the
merged stream keeps 96-98 % of the notes, the rest being unisons of two voices).
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import importlib.util
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

from symusic import Score

from .files import atomic_write

__all__ = [
    "SCORE_SUFFIXES",
    "NamedCorpus",
    "NAMED_CORPORA",
    "music21_corpus_root",
    "corpus_files",
    "named_corpus",
    "source_name",
    "score_file_to_midi",
    "load_score_file",
]

#: score formats converted with music21 (analysis files such as .rntxt are not music and are left out)
SCORE_SUFFIXES = (".krn", ".mxl", ".xml", ".musicxml", ".mei")
#: the prefix of a named corpus's `Corpus.source`
SOURCE_PREFIX = "music21:"
#: bump when the conversion of a score file changes (invalidates converted files)
CONVERT_FORMAT = 1


@dataclass(frozen=True)
class NamedCorpus:
    """A corpus of the installed music21: `folders` of its corpus directory read as `kind`
    ("scores" or "abc"), or the union of `members`; `only` / `exclude` filter file stems."""

    name: str
    style: str
    kind: str = "scores"
    folders: Tuple[str, ...] = ()
    members: Tuple[str, ...] = ()
    only: Tuple[str, ...] = ()
    exclude: Tuple[str, ...] = ()
    note: str = ""

    @property
    def source(self) -> str:
        return SOURCE_PREFIX + self.name


_HAN = ("han1", "han2")
NAMED_CORPORA: Dict[str, NamedCorpus] = {c.name: c for c in (
    NamedCorpus("han", "Han Chinese folk songs (Essen collection)", "abc", ("essenFolksong",), only=_HAN,
                note="the default corpus"),
    NamedCorpus("essen", "European folk melodies (Essen collection, without han)", "abc", ("essenFolksong",),
                exclude=_HAN),
    NamedCorpus("irish", "Irish and Scottish dance tunes (O'Neill's 1850, Ryan's Mammoth)", "abc",
                ("oneills1850", "ryansMammoth")),
    NamedCorpus("bach", "Bach chorales, 4 voices", "scores", ("bach",)),
    NamedCorpus("palestrina", "Renaissance polyphony (Palestrina masses, 4-6 voices)", "scores", ("palestrina",)),
    NamedCorpus("monteverdi", "Monteverdi madrigals, 5 voices", "scores", ("monteverdi",)),
    NamedCorpus("trecento", "14th-century polyphony (Trecento)", "scores", ("trecento",)),
    NamedCorpus("polyphony", "Renaissance and medieval polyphony (palestrina + monteverdi + trecento)", "scores",
                members=("palestrina", "monteverdi", "trecento")),
    NamedCorpus("quartets", "string quartets (Beethoven, Mozart, Haydn)", "scores", ("beethoven", "mozart", "haydn"),
                note="too few to train on; long test pieces"),
)}


def music21_corpus_root() -> Path:
    """The ``corpus`` folder of the installed music21 (found without importing it)."""
    spec = importlib.util.find_spec("music21")
    if spec is None:
        raise FileNotFoundError("the named corpora need music21 (pip install music21)")
    for location in spec.submodule_search_locations or []:
        root = Path(location) / "corpus"
        if root.is_dir():
            return root
    raise FileNotFoundError("the installed music21 has no corpus folder")


def named_corpus(name: str) -> NamedCorpus:
    """The registered corpus `name` (also accepts its source string "music21:name")."""
    key = name[len(SOURCE_PREFIX):] if name.startswith(SOURCE_PREFIX) else name
    if key not in NAMED_CORPORA:
        raise KeyError(f"unknown corpus {name!r}; named corpora: {', '.join(NAMED_CORPORA)}")
    return NAMED_CORPORA[key]


def source_name(source) -> Optional[str]:
    """The named corpus a --data value means ("palestrina", "music21:bach"), or None. A path
    that exists wins over a name."""
    if source is None:
        return None
    text = str(source)
    key = text[len(SOURCE_PREFIX):] if text.startswith(SOURCE_PREFIX) else text
    if key in NAMED_CORPORA and (text.startswith(SOURCE_PREFIX) or not Path(text).exists()):
        return key
    return None


def corpus_files(name: str, root: Optional[Path] = None) -> List[Path]:
    """The files of a named corpus, sorted, members of a union in their order."""
    corpus = named_corpus(name)
    root = root or music21_corpus_root()
    if corpus.members:
        return [f for member in corpus.members for f in corpus_files(member, root)]
    suffixes = SCORE_SUFFIXES if corpus.kind == "scores" else (".abc",)
    files = []
    for folder in corpus.folders:
        for f in sorted((root / folder).rglob("*")):
            if not f.is_file() or f.suffix.lower() not in suffixes or f.name.startswith("."):
                continue
            if (corpus.only and f.stem not in corpus.only) or f.stem in corpus.exclude:
                continue
            files.append(f)
    return files


# --------------------------------------------------------------------------------------------
# converting score files
# --------------------------------------------------------------------------------------------
def score_file_to_midi(path: Union[str, Path]) -> bytes:
    """MIDI bytes of a score file, parsed by music21 without its pickle cache."""
    from music21 import converter
    from music21.midi import translate

    # music21 warns (to stderr and through warnings) about every odd beam, clef or spine
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        parser = converter.Converter()
        parser.parseFile(str(path), forceSource=True, storePickle=False)
        midi = translate.music21ObjectToMidiFile(parser.stream)
        return midi.writestr()


def _music21_version() -> str:
    try:
        from importlib.metadata import version

        return version("music21")
    except Exception:  # pragma: no cover - metadata missing
        return "unknown"


def _converted_path(path: Path, convert_cache: Path) -> Path:
    st = path.stat()
    material = f"{CONVERT_FORMAT}|{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{_music21_version()}"
    return convert_cache / (hashlib.sha1(material.encode()).hexdigest() + ".mid")


class ConversionError(RuntimeError):
    """music21 could not read a score file (the message is kept with the converted files)."""


def load_score_file(path: Union[str, Path], convert_cache: Union[str, Path, None] = None) -> Score:
    """A score file as a symusic Score, through music21 -> MIDI; with `convert_cache` the MIDI (or
    the parse error) is stored there and reused while the file is unchanged."""
    path = Path(path)
    cached = None if convert_cache is None else _converted_path(path, Path(convert_cache).expanduser())
    if cached is not None:
        failed = cached.with_suffix(".err")
        if cached.is_file():
            return Score.from_midi(cached.read_bytes())
        if failed.is_file():
            raise ConversionError(failed.read_text(encoding="utf-8", errors="replace"))
    try:
        data = score_file_to_midi(path)
    except Exception as exc:  # music21 raises many types on bad scores
        message = f"music21 cannot read it ({type(exc).__name__}: {str(exc)[:200]})"
        if cached is not None:
            atomic_write(cached.with_suffix(".err"), lambda fh: fh.write(message.encode()))
        raise ConversionError(message) from None
    if cached is not None:
        atomic_write(cached, lambda fh: fh.write(data))
    return Score.from_midi(data)

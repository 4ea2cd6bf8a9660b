"""smdim.data / smdim.corpora: corpus layouts, skipping bad files, the token cache, splits,
training windows."""
import csv
import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from symusic import Note, Score, TimeSignature, Track
from torch.utils.data import DataLoader

from smdim import corpora
from smdim import tokenizer as T
from smdim.data import Corpus, DataSkipWarning, TokenDataset, load_corpus, make_splits
from smdim.metrics import invalid_token_rate


@pytest.fixture(autouse=True)
def _cache_env(tmp_path, monkeypatch):
    monkeypatch.setenv("SMDIM_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def tok():
    return T.make_tokenizer()


def write_midi(path, n_bars=4, base=60, ts=(4, 4), notes_per_bar=4):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tpq = 480
    s = Score(tpq)
    s.time_signatures.append(TimeSignature(0, *ts))
    t = Track(program=0, name="piano")
    bar = ts[0] * tpq * 4 // ts[1]
    step = bar // notes_per_bar
    for b in range(n_bars):
        for k in range(notes_per_bar):
            t.notes.append(Note(b * bar + k * step, step, base + (b + k) % 12, 64 + 8 * k))
    s.tracks.append(t)
    s.dump_midi(str(path))
    return path


def corpus_warnings(fn, *args, **kwargs):
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        out = fn(*args, **kwargs)
    return out, [w for w in rec if issubclass(w.category, DataSkipWarning)], rec


# --------------------------------------------------------------------------------------------
# the embedded Han corpus
# --------------------------------------------------------------------------------------------
def test_han_corpus_loads_and_is_cached(tok, tmp_path):
    corpus, skip_warns, _ = corpus_warnings(load_corpus, progress=False)
    assert corpus.layout == "han" and not corpus.from_cache
    assert len(corpus) >= 1200
    assert sum(corpus.skipped.values()) + len(corpus) == 1224
    assert len(skip_warns) <= 1
    lengths = sorted(len(p) for p in corpus.pieces)
    assert 150 <= lengths[len(lengths) // 2] <= 400  # median tokens per tune
    assert all(invalid_token_rate(tok, p) == 0.0 for p in corpus.pieces[::10])
    assert corpus.cache_path is not None and corpus.cache_path.parent == tmp_path / "cache"

    def no_parsing(*args, **kwargs):
        raise AssertionError("a cached corpus must not be parsed again")

    original = corpora.parse_abc_tunes
    corpora.parse_abc_tunes = no_parsing
    try:
        again, _, _ = corpus_warnings(load_corpus, progress=False)
    finally:
        corpora.parse_abc_tunes = original
    assert again.from_cache
    assert again.pieces == corpus.pieces and again.names == corpus.names and again.splits == corpus.splits


def test_han_files_come_from_music21():
    import music21
    import music21.corpus

    paths = corpora.han_abc_paths()
    assert [p.name for p in paths] == ["han1.abc", "han2.abc"]
    assert paths[0] == Path(music21.corpus.getWork("essenFolksong/han1"))
    # read from the installed music21 package (which may sit in a venv inside the checkout), never copied
    assert all(Path(music21.__file__).resolve().parent in p.resolve().parents for p in paths)
    repo = Path(__file__).resolve().parents[2]
    tracked = [q for q in repo.rglob("*.abc") if not any(part.startswith(".") or part == "site-packages"
                                                          for part in q.relative_to(repo).parts)]
    assert not tracked


def test_batch_abc_parsing_matches_symusic():
    text = Path(corpora.han_abc_paths()[0]).read_text(encoding="utf-8")
    tunes = corpora.split_abc_tunes(text)[:12]
    tunes.insert(3, "X:99\nT:broken\nK:H\nc2d2|\n")  # an unknown key: abc2midi gives up
    tunes.append("T:no reference number\nM:2/4\nL:1/8\nK:C\nCDEF|\n")
    batch = corpora.parse_abc_tunes(tunes)
    assert len(batch) == len(tunes)
    assert isinstance(batch[3], Exception)
    for tune, got in zip(tunes, batch):
        try:
            want = corpora.parse_abc(tune)
        except Exception:
            assert isinstance(got, Exception)
            continue
        assert not isinstance(got, Exception)
        assert got.ticks_per_quarter == want.ticks_per_quarter
        assert [(n.time, n.duration, n.pitch, n.velocity) for n in got.tracks[0].notes] == \
            [(n.time, n.duration, n.pitch, n.velocity) for n in want.tracks[0].notes]


def test_split_abc_tunes_keeps_file_header():
    text = "% comment\nL:1/8\n\nX:1\nT:a\nK:C\nCDEF|\n\nX:2\nT:b\nK:G\nGABc|\n"
    tunes = corpora.split_abc_tunes(text)
    assert len(tunes) == 2
    assert tunes[0].startswith("X:1\nL:1/8\n") and "CDEF" in tunes[0] and "GABc" not in tunes[0]
    assert corpora.parse_abc(tunes[1]).note_num() == 4


def test_abc_folder(tmp_path):
    d = tmp_path / "abc"
    d.mkdir()
    (d / "songs.abc").write_text("X:1\nT:a\nM:2/4\nL:1/8\nK:C\nCDEF|GABc|\n\nX:2\nT:b\nM:3/4\nL:1/8\nK:G\nGABcde|\n")
    corpus = load_corpus(d)
    assert corpus.layout == "abc" and len(corpus) == 2
    assert corpus.names == ["songs.abc#1", "songs.abc#2"]


# --------------------------------------------------------------------------------------------
# MIDI folders, bad files, cache
# --------------------------------------------------------------------------------------------
def make_bad_folder(root):
    write_midi(root / "a.mid", base=60)
    write_midi(root / "sub" / "b.MIDI", base=48, ts=(3, 4))
    write_midi(root / "sub" / "deeper" / "c.midi", base=72, ts=(6, 8))
    (root / "text.mid").write_text("this is not a MIDI file\n" * 20)
    Score(480).dump_midi(str(root / "empty.mid"))
    good = (root / "a.mid").read_bytes()
    (root / "truncated.mid").write_bytes(good[: len(good) // 2])
    (root / "notes.txt").write_text("ignored: not a MIDI suffix")


def test_folder_skips_bad_files_with_one_warning(tmp_path):
    root = tmp_path / "midi"
    make_bad_folder(root)
    assert corpora.detect_layout(root) == "midi"
    corpus, skip_warns, _ = corpus_warnings(load_corpus, root)
    assert isinstance(corpus, Corpus) and corpus.layout == "midi"
    assert sorted(corpus.names) == ["a.mid", "sub/b.MIDI", "sub/deeper/c.midi"]
    assert corpus.skipped == {"unreadable": 2, "empty": 1}
    assert len(skip_warns) == 1
    msg = str(skip_warns[0].message)
    assert "skipped 3 of 6" in msg and "unreadable: 2" in msg and "empty: 1" in msg
    assert any("text.mid" in s for s in corpus.skipped_files["unreadable"])
    # the second load reports the same summary from the cache
    again, skip_warns2, _ = corpus_warnings(load_corpus, root)
    assert again.from_cache and again.skipped == corpus.skipped and len(skip_warns2) == 1


def test_cache_reuse_invalidation_and_corruption(tmp_path, tok):
    root = tmp_path / "midi"
    for i in range(4):
        write_midi(root / f"{i}.mid", base=50 + i)
    first = load_corpus(root, tokenizer=tok)
    assert not first.from_cache and first.cache_path.exists()
    assert first.cache_path.parent == tmp_path / "cache"  # $SMDIM_CACHE
    second = load_corpus(root, tokenizer=tok)
    assert second.from_cache and second.pieces == first.pieces

    # a changed file changes the key
    write_midi(root / "0.mid", base=40, n_bars=6)
    third = load_corpus(root, tokenizer=tok)
    assert not third.from_cache and third.cache_path != first.cache_path
    assert third.pieces[0] != first.pieces[0]

    # another tokenizer, another cache file
    other = load_corpus(root, tokenizer=T.make_tokenizer({"num_velocities": 8}))
    assert not other.from_cache and other.cache_path != third.cache_path

    # a corrupt cache file is rebuilt with a warning
    third.cache_path.write_bytes(b"garbage" * 10)
    with pytest.warns(UserWarning, match="rebuilding"):
        rebuilt = load_corpus(root, tokenizer=tok)
    assert not rebuilt.from_cache and rebuilt.pieces == third.pieces
    assert load_corpus(root, tokenizer=tok).from_cache
    # explicit cache_dir, no temp files left behind, use_cache=False writes nothing
    custom = load_corpus(root, tokenizer=tok, cache_dir=tmp_path / "elsewhere")
    assert custom.cache_path.parent == tmp_path / "elsewhere"
    assert not list((tmp_path / "cache").glob("*.tmp"))
    nocache = load_corpus(root, tokenizer=tok, use_cache=False, cache_dir=tmp_path / "none")
    assert nocache.cache_path is None and not (tmp_path / "none").exists()


def test_parallel_tokenizing_matches(tmp_path, tok):
    root = tmp_path / "midi"
    for i in range(6):
        write_midi(root / f"{i}.mid", base=40 + 3 * i)
    serial = load_corpus(root, tokenizer=tok, use_cache=False)
    parallel = load_corpus(root, tokenizer=tok, use_cache=False, num_workers=2)
    assert parallel.pieces == serial.pieces and parallel.names == serial.names


def test_detect_layout_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        corpora.detect_layout(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError):
        load_corpus(tmp_path / "empty")
    assert corpora.detect_layout(None) == "han" and corpora.detect_layout("han") == "han"
    with pytest.raises(ValueError):
        load_corpus(tmp_path, layout="nonsense")


# --------------------------------------------------------------------------------------------
# MAESTRO and POP909 layouts
# --------------------------------------------------------------------------------------------
MAESTRO_ROWS = [
    ("Bach", "Prelude", "train", "2018", "2018/a.midi"),
    ("Bach", "Fugue", "train", "2018", "2018/b.midi"),
    ("Chopin", "Etude", "validation", "2017", "2017/c.midi"),
    ("Liszt", "Sonata", "test", "2017", "2017/d.midi"),
    ("Ravel", "Gone", "train", "2015", "2015/missing.midi"),
]


def make_maestro(root, fmt="csv"):
    root.mkdir(parents=True)
    for i, row in enumerate(MAESTRO_ROWS):
        if "missing" not in row[4]:
            write_midi(root / row[4], base=50 + 5 * i)
    cols = ["canonical_composer", "canonical_title", "split", "year", "midi_filename", "audio_filename", "duration"]
    rows = [list(r) + [r[4].replace(".midi", ".wav"), "12.5"] for r in MAESTRO_ROWS]
    if fmt == "csv":
        with open(root / "maestro-v3.0.0.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(cols)
            w.writerows(rows)
    else:  # pandas "columns" orientation, as MAESTRO ships it
        data = {c: {str(i): r[j] for i, r in enumerate(rows)} for j, c in enumerate(cols)}
        (root / "maestro-v3.0.0.json").write_text(json.dumps(data))


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_maestro_layout_uses_metadata_split(tmp_path, fmt):
    root = tmp_path / "maestro-v3.0.0"
    make_maestro(root, fmt)
    (root / "stray.mid").write_bytes(b"not listed in the metadata: ignored")
    assert corpora.detect_layout(root) == "maestro"
    corpus, skip_warns, _ = corpus_warnings(load_corpus, root)
    assert corpus.layout == "maestro"
    assert corpus.names == ["2018/a.midi", "2018/b.midi", "2017/c.midi", "2017/d.midi"]
    named = {s: [corpus.names[i] for i in idx] for s, idx in corpus.splits.items()}
    assert named == {"train": ["2018/a.midi", "2018/b.midi"], "valid": ["2017/c.midi"], "test": ["2017/d.midi"]}
    assert corpus.skipped == {"missing": 1} and len(skip_warns) == 1


def make_pop909(root, n=10):
    for i in range(1, n + 1):
        song = f"{i:03d}"
        write_midi(root / song / f"{song}.mid", base=45 + i)
        write_midi(root / song / "versions" / f"{song}-v1.mid", base=45 + i, n_bars=2)


def test_pop909_layout_and_override(tmp_path):
    outer = tmp_path / "POP909-Dataset"
    root = outer / "POP909"
    make_pop909(root)
    assert corpora.detect_layout(root) == "pop909"
    assert corpora.detect_layout(outer) == "pop909"  # the repository's top folder works too
    corpus = load_corpus(outer)
    assert corpus.layout == "pop909" and len(corpus) == 10
    assert corpus.names[0] == "001/001.mid"
    assert sorted(i for s in corpus.splits.values() for i in s) == list(range(10))
    assert load_corpus(outer, seed=0).splits == corpus.splits
    # explicit override: every MIDI file, versions included
    as_midi = load_corpus(root, layout="midi")
    assert as_midi.layout == "midi" and len(as_midi) == 20


# --------------------------------------------------------------------------------------------
# splits
# --------------------------------------------------------------------------------------------
def test_make_splits_disjoint_deterministic():
    s = make_splits(1000, seed=3)
    parts = [set(s[k]) for k in ("train", "valid", "test")]
    assert sum(map(len, parts)) == 1000 and set.union(*parts) == set(range(1000))
    assert len(parts[1]) == 50 and len(parts[2]) == 50
    assert make_splits(1000, seed=3) == s and make_splits(1000, seed=4) != s
    with_one_more = make_splits([str(i).encode() for i in range(1001)], seed=3)
    moved = sum(len(set(s[k]) - set(with_one_more[k])) for k in s)
    assert moved <= 2  # adding a piece moves at most the group at each split boundary
    tiny = make_splits(3)
    assert all(len(v) == 1 for v in tiny.values())
    assert make_splits(0) == {"train": [], "valid": [], "test": []}
    assert make_splits(10, (1, 0, 0))["train"] == list(range(10))
    with pytest.raises(ValueError):
        make_splits(10, (0.5, 0.5))


def test_duplicates_and_transpositions_share_a_split(tmp_path):
    root = tmp_path / "midi"
    for i in range(40):
        write_midi(root / f"{i:02d}.mid", n_bars=2 + i // 4, notes_per_bar=1 + i % 4)
    for i in range(0, 40, 3):  # an exact copy and a copy 3 semitones up of every third piece
        shutil.copy(root / f"{i:02d}.mid", root / f"{i:02d}_copy.mid")
        write_midi(root / f"{i:02d}_up3.mid", n_bars=2 + i // 4, notes_per_bar=1 + i % 4, base=63)
    for seed in range(5):
        corpus = load_corpus(root, seed=seed, use_cache=False)
        where = {corpus.names[i]: s for s, idx in corpus.splits.items() for i in idx}
        for i in range(0, 40, 3):
            assert where[f"{i:02d}.mid"] == where[f"{i:02d}_copy.mid"] == where[f"{i:02d}_up3.mid"]
        assert all(corpus.splits.values())


def test_han_duplicate_groups_never_cross_splits():
    """The Han songs hold 4 exact-duplicate pairs and one pair a transposition apart (han1.abc#489 is
    han2.abc#316 moved by 3 semitones, so --transpose 3 would train on the test tune)."""
    from smdim.data import content_key
    from smdim.tokenizer import pitch_table

    corpus = load_corpus(None, progress=False)
    table = pitch_table(corpus.tokenizer)
    groups = {}
    for i, ids in enumerate(corpus.pieces):
        groups.setdefault(content_key(ids, table), []).append(corpus.names[i])
    repeated = [sorted(v) for v in groups.values() if len(v) > 1]
    assert len(repeated) == 5 and ["han1.abc#489", "han2.abc#316"] in repeated
    exact = {content_key(ids) for ids in corpus.pieces}
    assert len(exact) == len(corpus.pieces) - 4
    where = {corpus.names[i]: s for s, idx in corpus.splits.items() for i in idx}
    assert all(len({where[name] for name in group}) == 1 for group in repeated)
    sizes = {s: len(v) for s, v in corpus.splits.items()}
    assert sizes["test"] == sizes["valid"] == round(0.05 * len(corpus.pieces))


def test_corpus_splits_by_piece(tmp_path):
    root = tmp_path / "midi"
    for i in range(30):  # distinct pieces (no two are transpositions of each other)
        write_midi(root / f"{i:02d}.mid", n_bars=2 + i // 4, notes_per_bar=1 + i % 4, base=40 + i)
    c1 = load_corpus(root, seed=7, use_cache=False)
    c2 = load_corpus(root, seed=7, use_cache=False)
    c3 = load_corpus(root, seed=8, use_cache=False)
    assert c1.splits == c2.splits and c1.splits != c3.splits
    ids = [i for s in c1.splits.values() for i in s]
    assert sorted(ids) == list(range(30))  # each piece in exactly one split
    assert c1.split("valid") == [c1.pieces[i] for i in c1.splits["valid"]]


# --------------------------------------------------------------------------------------------
# TokenDataset
# --------------------------------------------------------------------------------------------
def piece_of(tok, n_bars, base=60, ts=(4, 4), notes_per_bar=4):
    s = Score(480)
    s.time_signatures.append(TimeSignature(0, *ts))
    t = Track(program=0)
    bar = ts[0] * 480 * 4 // ts[1]
    step = bar // notes_per_bar
    for b in range(n_bars):
        for k in range(notes_per_bar):
            t.notes.append(Note(b * bar + k * step, step, base + (3 * b + k) % 12, 80))
    s.tracks.append(t)
    return T.encode(tok, s)


def test_train_crops_length_bars_and_padding(tok):
    long_piece = piece_of(tok, 40)  # 40 bars x (Bar TimeSig + 4 x 4) = 720 tokens
    short_piece = piece_of(tok, 2)
    ds = TokenDataset([long_piece, short_piece], 128, tokenizer=tok, seed=0)
    assert len(ds) == 6 + 1  # ceil(720 / 128) crops of the long piece, one of the short one
    bar = T.bar_id(tok)
    starts = set()
    for i in range(len(ds)):
        item = ds[i]
        assert item["tokens"].shape == (128,) and item["tokens"].dtype == torch.long
        assert item["pad_mask"].shape == (128,) and item["pad_mask"].dtype == torch.bool
        piece = [long_piece, short_piece][item["piece"]]
        n = min(128, len(piece))
        assert item["tokens"][:n].tolist() == piece[item["start"]:item["start"] + n]
        assert item["pad_mask"][:n].all() and not item["pad_mask"][n:].any()  # True = real token
        assert (item["tokens"][n:] == T.pad_id(tok)).all()
        assert item["tokens"][0].item() == bar  # crops start at a bar
        if item["piece"] == 0:
            starts.add(item["start"])
    assert len(starts) > 1
    batch = next(iter(DataLoader(ds, batch_size=4, shuffle=False)))
    assert batch["tokens"].shape == (4, 128) and batch["pad_mask"].shape == (4, 128)


def test_crops_seeded_and_epoch_dependent(tok):
    pieces = [piece_of(tok, 40, base=50 + i) for i in range(3)]
    a = TokenDataset(pieces, 64, tokenizer=tok, seed=1, transpose=4)
    b = TokenDataset(pieces, 64, tokenizer=tok, seed=1, transpose=4)
    draw = lambda ds: [(ds[i]["start"], ds[i]["transpose"]) for i in range(len(ds))]  # noqa: E731
    assert draw(a) == draw(b) == draw(a)
    b.set_epoch(1)
    assert draw(b) != draw(a)
    # seed=None: torch's RNG (per DataLoader worker), reproducible under torch.manual_seed
    c = TokenDataset(pieces, 64, tokenizer=tok)
    torch.manual_seed(0)
    first = draw(c)
    torch.manual_seed(0)
    assert draw(c) == first


def test_eval_windows_cover_every_token_once(tok):
    pieces = [piece_of(tok, 30), piece_of(tok, 1), piece_of(tok, 9, ts=(3, 4), notes_per_bar=3)]
    ds = TokenDataset(pieces, 100, tokenizer=tok, train=False)
    seen = {i: [] for i in range(len(pieces))}
    for i in range(len(ds)):
        item = ds[i]
        n = int(item["pad_mask"].sum())
        assert n > 0 and item["pad_mask"][:n].all()
        seen[item["piece"]].extend(range(item["start"], item["start"] + n))
        assert item["tokens"][:n].tolist() == pieces[item["piece"]][item["start"]:item["start"] + n]
        assert item["tokens"][0].item() == T.bar_id(tok)
        assert item["transpose"] == 0
    for p, positions in seen.items():
        assert positions == list(range(len(pieces[p])))
    again = TokenDataset(pieces, 100, tokenizer=tok, train=False)
    assert all(torch.equal(ds[i]["tokens"], again[i]["tokens"]) for i in range(len(ds)))
    plain = TokenDataset(pieces, 100, tokenizer=tok, train=False, bar_aligned=False)
    assert len(plain) == sum(-(-len(p) // 100) for p in pieces)


def test_transposition_shifts_all_pitches_in_range(tok):
    pt = T.pitch_tokens(tok)
    low = piece_of(tok, 8, base=21)    # pitches 21..32: can only go up
    high = piece_of(tok, 8, base=97)   # pitches 97..108: can only go down
    mid = piece_of(tok, 8, base=60)
    ds = TokenDataset([low, high, mid], 512, tokenizer=tok, transpose=6, seed=0)
    ks = set()
    for epoch in range(8):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            item = ds[i]
            piece = [low, high, mid][item["piece"]]
            toks = item["tokens"][: len(piece)].tolist()
            k = item["transpose"]
            shifts = {pt[t] - pt[o] for t, o in zip(toks, piece) if o in pt}
            assert shifts == {k}  # one shift for every pitch of the crop
            assert [t for t in toks if t not in pt] == [o for o in piece if o not in pt]
            assert all(21 <= pt[t] <= 108 for t in toks if t in pt)
            assert -6 <= k <= 6
            if item["piece"] == 0:
                assert k >= 0
            if item["piece"] == 1:
                assert k <= 0
            ks.add(k)
    assert len(ks) > 3
    off = TokenDataset([mid], 512, tokenizer=tok, transpose=0, seed=0)
    assert off[0]["transpose"] == 0 and off[0]["tokens"][: len(mid)].tolist() == mid


def test_dataset_from_corpus_split(tmp_path):
    root = tmp_path / "midi"
    for i in range(20):
        write_midi(root / f"{i:02d}.mid", base=40 + i, n_bars=3)
    corpus = load_corpus(root, use_cache=False)
    ds = TokenDataset(corpus, 32, split="valid", train=False)
    assert {ds[i]["piece"] for i in range(len(ds))} == set(range(len(corpus.splits["valid"])))
    with pytest.raises(ValueError):
        TokenDataset([[1, 2, 3]], 8)  # no tokenizer
    with pytest.raises(KeyError):
        corpus.split("dev")

"""Named music21 corpora: the registry, layout detection, score-file conversion with its cache, bad
scores skipped and counted, and `smdim corpora`."""
import shutil
from pathlib import Path

import pytest

from smdim import music21_corpora
from smdim.cli import main
from smdim.corpora import detect_layout, list_items
from smdim.data import cached_summary, load_corpus
from smdim.music21_corpora import NAMED_CORPORA, corpus_files, music21_corpus_root, source_name


def test_every_named_corpus_has_files_in_the_installed_music21():
    for name, corpus in NAMED_CORPORA.items():
        files = corpus_files(name)
        assert files, name
        suffixes = {f.suffix.lower() for f in files}
        assert suffixes <= ({".abc"} if corpus.kind == "abc" else set(music21_corpora.SCORE_SUFFIXES)), name
    assert [f.stem for f in corpus_files("han")] == ["han1", "han2"]
    assert not {"han1", "han2"} & {f.stem for f in corpus_files("essen")}
    union = corpus_files("polyphony")
    assert union == corpus_files("palestrina") + corpus_files("monteverdi") + corpus_files("trecento")
    # analysis files (roman numerals) are not music
    assert not any(f.suffix == ".rntxt" for f in corpus_files("bach") + corpus_files("monteverdi"))


def test_names_pick_the_layout_and_an_existing_path_wins(tmp_path, monkeypatch):
    assert detect_layout("han") == "han" and detect_layout("palestrina") == "music21"
    assert detect_layout("music21:bach") == "music21" and source_name("music21:bach") == "bach"
    layout, items, _ = list_items("bach")
    assert layout == "music21" and items[0].name.startswith("bach/") and items[0].is_score_file
    layout, items, _ = list_items("irish")
    assert layout == "music21" and items and items[0].abc_text is not None
    (tmp_path / "bach").mkdir()
    (tmp_path / "bach" / "x.mid").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    assert source_name("bach") is None and detect_layout("bach") == "midi"
    with pytest.raises(KeyError, match="named corpora"):
        music21_corpora.named_corpus("nosuch")


def _small_chorales(n=2):
    files = sorted(corpus_files("bach"), key=lambda f: f.stat().st_size)
    return [f for f in files if f.suffix == ".mxl"][:n]


def test_score_files_convert_once_and_bad_ones_are_skipped_and_counted(tmp_path, monkeypatch):
    folder = tmp_path / "scores"
    folder.mkdir()
    for f in _small_chorales():
        shutil.copy(f, folder / f.name)
    (folder / "broken.mxl").write_bytes(b"not a zipped MusicXML file")
    cache = tmp_path / "cache"
    with pytest.warns(UserWarning, match=r"skipped 1 of 3 files .*unreadable: 1"):
        first = load_corpus(folder, cache_dir=cache, num_workers=0)
    assert first.layout == "scores" and len(first) == 2 and first.skipped == {"unreadable": 1}
    assert all(len(p) > 100 for p in first.pieces)
    converted = sorted(p.suffix for p in (cache / "converted").iterdir())
    assert converted == [".err", ".mid", ".mid"]
    # the token cache is used next time; without it, the converted MIDI is (music21 is not called again)
    with pytest.warns(UserWarning, match="skipped 1"):
        again = load_corpus(folder, cache_dir=cache, num_workers=0)
    assert again.from_cache and again.pieces == first.pieces
    first.cache_path.unlink()

    def no_music21(path):
        raise AssertionError(f"music21 was called again for {path}")

    monkeypatch.setattr(music21_corpora, "score_file_to_midi", no_music21)
    with pytest.warns(UserWarning, match="skipped 1"):
        third = load_corpus(folder, cache_dir=cache, num_workers=0)
    assert not third.from_cache and third.pieces == first.pieces and third.skipped == {"unreadable": 1}


def test_conversion_in_worker_processes_gives_the_same_tokens(tmp_path):
    folder = tmp_path / "scores"
    folder.mkdir()
    for f in _small_chorales():
        shutil.copy(f, folder / f.name)
    serial = load_corpus(folder, cache_dir=tmp_path / "a", num_workers=0)
    parallel = load_corpus(folder, cache_dir=tmp_path / "b", num_workers=2)
    assert parallel.pieces == serial.pieces and parallel.names == serial.names


def test_the_corpora_command_lists_every_corpus_and_what_is_cached(tmp_path, capsys):
    cache = tmp_path / "cache"
    assert main(["corpora", "--cache-dir", str(cache)]) == 0
    out = capsys.readouterr().out
    for name in NAMED_CORPORA:
        assert f"| {name} |" in out
    assert "| han | 1224 tunes | - | - | no |" in out
    load_corpus("han", cache_dir=cache)
    info = cached_summary("han", cache_dir=cache)
    assert info["cached"] and info["pieces"] == 1222 and info["median"] <= info["p90"] <= info["max"]
    assert main(["corpora", "--cache-dir", str(cache)]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| han |"))
    assert "| 1222 (2 skipped) |" in row and f"| {info['median']:.0f} / {info['p90']:.0f} / {info['max']} |" in row
    assert "| yes |" in row


def test_bad_corpus_names_are_one_line_errors(tmp_path, capsys):
    assert main(["corpora", "--prepare", "nosuch", "--cache-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown corpus 'nosuch'" in err and "palestrina" in err and "Traceback" not in err
    assert main(["train", "--data", "nosuch-corpus", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "bach" in err


def test_the_corpus_root_is_music21s():
    assert (music21_corpus_root() / "bach").is_dir()
    assert Path(corpus_files("palestrina")[0]).is_relative_to(music21_corpus_root())


def test_abc_batches_go_on_after_abc2midi_stops_midway(monkeypatch):
    """abc2midi stops at a malformed tune and writes nothing for the rest: the rest run again, and a
    tune that blocks a batch is parsed alone (the Irish collection lost 768 tunes before)."""
    from smdim import corpora

    tunes = [f"X:{i}\nT:t{i}\nM:4/4\nL:1/4\nK:C\nCDEF|\n" for i in range(6)]
    bad = {2}
    runs = []

    def fake_batch(exe, batch):
        runs.append(len(batch))
        out = []
        for tune in batch:
            if int(tune.split("T:t")[1].split("\n")[0]) in bad:
                return out + [None] * (len(batch) - len(out))  # stops here: nothing for the rest
            out.append(f"score of {tune.splitlines()[1]}")
        return out

    alone = []
    monkeypatch.setattr(corpora, "_abc2midi_binary", lambda: "abc2midi")
    monkeypatch.setattr(corpora, "_abc2midi_batch", fake_batch)
    monkeypatch.setattr(corpora, "_try_parse_abc", lambda t: alone.append(t) or RuntimeError("malformed"))
    out = corpora.parse_abc_tunes(tunes)
    assert out[:2] == ["score of T:t0", "score of T:t1"] and out[3:] == [f"score of T:t{i}" for i in (3, 4, 5)]
    assert isinstance(out[2], RuntimeError) and alone == [tunes[2]]
    assert runs == [6, 4, 3]


def test_long_crops_of_real_polyphony_start_at_bars_and_fill_the_window(tmp_path):
    """Palestrina-length pieces at 2048 tokens: every training crop starts at a Bar and holds 2048 real
    tokens when the piece is longer; evaluation windows start at bars and cover each piece once."""
    import torch

    from smdim.data import TokenDataset
    from smdim.tokenizer import bar_id

    folder = tmp_path / "scores"
    folder.mkdir()
    longest = sorted(corpus_files("trecento"), key=lambda f: f.stat().st_size)[-2:]
    for f in longest:
        shutil.copy(f, folder / f.name)
    corpus = load_corpus(folder, cache_dir=tmp_path / "cache", num_workers=0)
    assert min(len(p) for p in corpus.pieces) > 2 * 2048
    bar = bar_id(corpus.tokenizer)
    train = TokenDataset(corpus.pieces, 2048, tokenizer=corpus.tokenizer, seed=0, transpose=3)
    assert len(train) == sum(-(-len(p) // 2048) for p in corpus.pieces)
    for i in range(len(train)):
        item = train[i]
        assert item["tokens"][0].item() == bar and item["pad_mask"].all()
    windows = TokenDataset(corpus.pieces, 2048, tokenizer=corpus.tokenizer, train=False)
    covered = {}
    for i in range(len(windows)):
        item = windows[i]
        n = int(item["pad_mask"].sum())
        assert item["tokens"][0].item() == bar and n <= 2048
        covered[item["piece"]] = covered.get(item["piece"], 0) + n
    assert covered == {i: len(p) for i, p in enumerate(corpus.pieces)}
    assert torch.is_tensor(windows[0]["tokens"])

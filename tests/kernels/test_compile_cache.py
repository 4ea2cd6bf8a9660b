"""The versioned Inductor cache directory: one per version of the kernels, the user's choice kept."""
import os

from smdim_kernels import compile_cache


def test_fingerprint_follows_the_sources(tmp_path, monkeypatch):
    package = tmp_path / "pkg"
    (package / "ops").mkdir(parents=True)
    (package / "ops" / "op.py").write_text("fake = 'time-major'\n")
    (package / "notes.txt").write_text("not a source")
    monkeypatch.setattr(compile_cache, "_PACKAGE", package)
    first = compile_cache.kernels_fingerprint()
    (package / "notes.txt").write_text("still not a source")
    assert compile_cache.kernels_fingerprint() == first
    (package / "ops" / "op.py").write_text("fake = 'channel-major'\n")
    changed = compile_cache.kernels_fingerprint()
    assert changed != first and len(changed) == 16
    assert compile_cache.versioned_compile_cache_dir().endswith(f"torchinductor_smdim_{changed}")


def test_sets_the_versioned_dir_only_when_the_user_did_not(monkeypatch, tmp_path):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    chosen = compile_cache.use_versioned_compile_cache()
    assert chosen == os.environ["TORCHINDUCTOR_CACHE_DIR"] == compile_cache.versioned_compile_cache_dir()
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    assert compile_cache.use_versioned_compile_cache() == str(tmp_path)
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path)

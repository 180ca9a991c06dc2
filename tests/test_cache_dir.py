"""One cache root for everything streamrestore keeps between runs (``streamrestore.cache_dir``)."""
from pathlib import Path

import pytest

from streamrestore.backends.engine_files import engine_dir
from streamrestore.cache_dir import cache_root
from streamrestore.model.adapt import default_cache_dir
from streamrestore.model.registry import prompt_cache_path

VARIABLES = ("STREAMRESTORE_CACHE", "STREAMRESTORE_HOME", "XDG_CACHE_HOME")


@pytest.fixture
def clean_environment(monkeypatch):
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def _kept(root: Path) -> None:
    """The engines, the fine-tunes and the prompt all live under ``root``."""
    assert cache_root() == root
    assert engine_dir() == root / "engines"
    assert default_cache_dir() == root / "adapted"
    assert prompt_cache_path() == root / "instantrestore_prompt_embeds.safetensors"


def test_the_first_variable_set_decides_for_every_cache(clean_environment, tmp_path):
    env = clean_environment
    env.setenv("HOME", str(tmp_path / "user"))
    _kept(tmp_path / "user" / ".cache" / "streamrestore")
    env.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    _kept(tmp_path / "xdg" / "streamrestore")
    env.setenv("STREAMRESTORE_HOME", str(tmp_path / "home"))  # the older name is still read
    _kept(tmp_path / "home")
    env.setenv("STREAMRESTORE_CACHE", str(tmp_path / "cache"))
    _kept(tmp_path / "cache")


def test_an_engine_folder_given_explicitly_wins(clean_environment, tmp_path):
    clean_environment.setenv("STREAMRESTORE_CACHE", str(tmp_path / "cache"))
    assert engine_dir(tmp_path / "mine") == tmp_path / "mine"


def test_a_home_folder_in_a_variable_is_expanded(clean_environment, tmp_path):
    clean_environment.setenv("HOME", str(tmp_path))
    clean_environment.setenv("STREAMRESTORE_CACHE", "~/streamrestore-cache")
    _kept(tmp_path / "streamrestore-cache")

"""One cache root for everything streamrestore keeps between runs (``streamrestore.cache_dir``)."""
import os
from pathlib import Path

import pytest

from streamrestore.backends.engine_files import engine_dir
from streamrestore.cache_dir import CACHE_PLACES, cache_parts, cache_root, clear_cache
from streamrestore.cli import main
from streamrestore.model.adapt import default_cache_dir
from streamrestore.model.registry import prompt_cache_path

VARIABLES = ("STREAMRESTORE_CACHE", "STREAMRESTORE_HOME", "XDG_CACHE_HOME")


@pytest.fixture
def clean_environment(monkeypatch, tmp_path_factory):
    """No cache variable set, and a home and temporary folder of the test's own (the cache command names the
    other folders a cache may be in: this machine's own ~/.cache/streamrestore is not the test's)."""
    import tempfile

    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path_factory.mktemp("home")))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path_factory.mktemp("tmp")))
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


def _fill(root: Path) -> dict[str, Path]:
    """A cache with a file in each place, and files of other kinds that are not the cache's."""
    (root / "engines").mkdir(parents=True)
    (root / "adapted").mkdir()
    files = {
        "onnx": root / "engines" / "lite-1.onnx", "ep": root / "engines" / "lite-2.ep",
        "adapted": root / "adapted" / "person.safetensors", "prompt": root / "instantrestore_prompt_embeds.safetensors",
        "foreign": root / "engines" / "notes.txt", "partial": root / "adapted" / "person.safetensors.123.tmp",
    }
    for i, path in enumerate(files.values()):
        path.write_bytes(b"x" * (1000 * (i + 1)))
    return files


def test_each_place_counts_only_its_own_kinds_of_file(tmp_path):
    _fill(tmp_path)
    parts = {part.name: part for part in cache_parts(tmp_path)}
    assert [name for name in parts] == [place.name for place in CACHE_PLACES]
    assert (parts["engines"].files, parts["engines"].size) == (2, 3000)  # the .txt is not the cache's
    # a fine-tune being written (or a killed run's) takes room too
    assert (parts["adapted"].files, parts["adapted"].size) == (2, 9000)
    assert (parts["prompt"].files, parts["prompt"].size) == (1, 4000)
    assert all(part.files == 0 and part.size == 0 for part in cache_parts(tmp_path / "never-made"))


def test_clearing_a_place_deletes_only_its_files(tmp_path):
    files = _fill(tmp_path)
    assert clear_cache(["engines"], tmp_path) == (2, 3000)  # (the pair it has always returned)
    assert not files["onnx"].exists() and not files["ep"].exists()
    assert files["foreign"].exists() and files["adapted"].exists() and files["prompt"].exists()
    files, size = cleared = clear_cache(["engines"], tmp_path)
    assert (files, size, cleared.files, cleared.size, cleared.kept) == (0, 0, 0, 0, 0)


def test_the_programs_of_a_persons_fine_tune_are_cleared_with_it(tmp_path):
    """A program exported from an --adapt fine-tune (``engines/lite+adapt-<digest>.onnx``) holds the person's
    fine-tuned weights: ``--clear adapted`` left it, and only ``--clear engines`` (which a user deleting a
    person's data has no reason to run) deleted it."""
    files = _fill(tmp_path)
    program = tmp_path / "engines" / "lite+adapt-90ecad73.onnx"
    being_written = tmp_path / "engines" / "lite+adapt-90ecad73.onnx.4242.a1b2c3.tmp"
    program.write_bytes(b"x" * 500)
    being_written.write_bytes(b"x" * 50)
    parts = {part.name: part for part in cache_parts(tmp_path)}
    assert (parts["engines"].files, parts["engines"].size) == (2, 3000)  # counted once, with the person's data
    assert (parts["adapted"].files, parts["adapted"].size) == (4, 9550)
    assert clear_cache(["engines"], tmp_path) == (2, 3000) and program.exists()
    cleared = clear_cache(["adapted"], tmp_path)
    assert cleared == (2, 3500) and cleared.kept == 2  # (the fine-tune's and the program's being written)
    assert not program.exists() and not files["adapted"].exists() and being_written.exists()


def test_a_temporary_file_a_killed_run_left_is_cleared_and_one_being_written_kept(tmp_path):
    """A run killed while exporting or fine-tuning left its temporary file in the cache for ever:
    neither counted nor cleared."""
    import time

    from streamrestore.cache_dir import LEFTOVER_AGE_S

    files = _fill(tmp_path)
    old = [tmp_path / "engines" / "unet.onnx.4242.a1b2c3.tmp", tmp_path / "engines" / "unet.ep.tmp"]
    young = tmp_path / "engines" / "vae.onnx.4243.d4e5f6.tmp"
    for path in (*old, young):
        path.write_bytes(b"x" * 100)
    for path in old:
        os.utime(path, (time.time() - LEFTOVER_AGE_S - 60,) * 2)
    assert {p.name: p.files for p in cache_parts(tmp_path)}["engines"] == 5
    cleared = clear_cache(["engines", "adapted"], tmp_path)
    assert cleared == (2 + 2 + 1, 1000 + 2000 + 200 + 3000) and cleared.kept == 2  # (young, partial)
    assert young.exists() and files["partial"].exists() and files["foreign"].exists()
    assert not any(path.exists() for path in old)


def test_a_temporary_file_whose_writer_is_gone_is_a_leftover_after_two_minutes(tmp_path):
    """An OOM kill mid-export left 17-27 MB that --clear kept for an hour as "perhaps being written", and the next
    export of the same program left it beside its own: the writer's process id is in the name."""
    import subprocess
    import sys
    import time

    from streamrestore.cache_dir import WRITER_GONE_AGE_S, is_leftover

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True).stdout.strip()
    engines = tmp_path / "engines"
    engines.mkdir()
    dead, alive, older = (engines / f"lite-1.onnx.{gone}.a1b2c3.tmp", engines / f"lite-1.onnx.{os.getpid()}.d4e5f6.tmp",
                          engines / "lite-1.onnx.tmp")
    for path in (dead, alive, older):
        path.write_bytes(b"x" * 100)
        os.utime(path, (time.time() - WRITER_GONE_AGE_S - 10,) * 2)
    assert is_leftover(dead.name, WRITER_GONE_AGE_S + 10) and not is_leftover(dead.name, 30)
    assert not is_leftover(alive.name, WRITER_GONE_AGE_S + 10) and not is_leftover(older.name, WRITER_GONE_AGE_S + 10)
    cleared = clear_cache(["engines"], tmp_path)
    assert cleared == (1, 100) and cleared.kept == 2 and not dead.exists() and alive.exists() and older.exists()


def test_an_unknown_place_deletes_nothing(tmp_path):
    files = _fill(tmp_path)
    with pytest.raises(ValueError, match="'engine'.*engines, adapted, prompt"):
        clear_cache(["adapted", "engine"], tmp_path)
    assert all(path.exists() for path in files.values())


def test_the_cache_command_shows_the_places_and_clears_them(clean_environment, tmp_path, capsys):
    clean_environment.setenv("STREAMRESTORE_CACHE", str(tmp_path))
    clean_environment.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    files = _fill(tmp_path)
    assert main(["cache"]) == 0
    shown = capsys.readouterr().out
    assert f"cache: {tmp_path} (placed by $STREAMRESTORE_CACHE)" in shown
    assert "engines  2 file(s), 3.0 kB" in shown and "prompt   1 file(s), 4.0 kB" in shown
    assert "total    16.0 kB" in shown and "compile cache" not in shown  # torch's is shown only where it is

    (tmp_path / "inductor").mkdir()
    (tmp_path / "inductor" / "kernel.so").write_bytes(b"x" * 2500)
    assert main(["cache", "--clear", "adapted", "--clear", "prompt"]) == 0
    assert capsys.readouterr().out == (f"deleted 2 file(s), 7.0 kB, from {tmp_path} (adapted, prompt); kept 1 "
                                       "temporary file(s) under an hour old, which a running streamrestore may be "
                                       "writing\n")
    assert files["onnx"].exists() and not files["adapted"].exists() and not files["prompt"].exists()
    assert main(["cache"]) == 0
    assert f"not cleared here: {tmp_path / 'inductor'}, 2.5 kB" in capsys.readouterr().out

    assert main(["cache", "--clear", "all"]) == 0
    assert "deleted 2 file(s), 3.0 kB" in capsys.readouterr().out
    assert files["foreign"].exists() and files["partial"].exists() and (tmp_path / "inductor" / "kernel.so").exists()


def test_a_cache_that_cannot_be_cleared_is_one_line_naming_the_file(clean_environment, tmp_path, capsys, monkeypatch):
    clean_environment.setenv("STREAMRESTORE_CACHE", str(tmp_path))
    files = _fill(tmp_path)

    def refuse(self, missing_ok=False):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "unlink", refuse)
    assert main(["cache", "--clear", "engines"]) == 2
    said = capsys.readouterr().err
    assert said.startswith("streamrestore: error: cannot delete ") and "Permission denied" in said
    assert said.count("\n") == 1 and files["onnx"].name in said


def test_a_cache_folder_that_cannot_be_read_is_one_line(clean_environment, tmp_path, capsys, monkeypatch):
    clean_environment.setenv("STREAMRESTORE_CACHE", str(tmp_path))
    _fill(tmp_path)

    def refuse(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "iterdir", refuse)
    assert main(["cache"]) == 2
    said = capsys.readouterr().err
    assert said == f"streamrestore: error: cannot read {tmp_path / 'engines'}: Permission denied\n"


def test_a_cache_files_temporary_name_is_this_processs_own_and_counted_as_the_caches(tmp_path):
    from streamrestore.cache_dir import cache_temp_name

    path = tmp_path / "engines" / "unet.ep"
    names = {cache_temp_name(path) for _ in range(20)}
    assert len(names) == 20 and all(name.parent == path.parent for name in names)
    path.parent.mkdir()
    next(iter(names)).write_bytes(b"x" * 10)
    assert {p.name: p.files for p in cache_parts(tmp_path)}["engines"] == 1


def test_a_user_without_a_home_folder_gets_a_temporary_cache(clean_environment, tmp_path, capsys):
    """An arbitrary container user id with no $HOME and no passwd entry (OpenShift, env -i): Path.home() raised
    mid-run and the run ended in a traceback, as did `streamrestore cache`."""
    import tempfile

    clean_environment.delenv("HOME", raising=False)
    clean_environment.setattr(Path, "home", classmethod(lambda cls: (_ for _ in ()).throw(
        RuntimeError("Could not determine home directory."))))
    clean_environment.setattr(tempfile, "tempdir", str(tmp_path))
    _kept(tmp_path / f"streamrestore-cache-{os.getuid()}")
    assert (tmp_path / f"streamrestore-cache-{os.getuid()}").stat().st_mode & 0o777 == 0o700  # (this user's alone)
    assert main(["cache"]) == 0
    assert "(placed by no home folder: a temporary one, emptied with it; set $STREAMRESTORE_CACHE to keep it)" in \
        capsys.readouterr().out
    clean_environment.undo()  # (Path.home back) and HOME set empty, as `env HOME=` leaves it: it was read as "/"
    clean_environment.setattr(tempfile, "tempdir", str(tmp_path))
    for name in VARIABLES:
        clean_environment.delenv(name, raising=False)
    clean_environment.setenv("HOME", "")
    _kept(tmp_path / f"streamrestore-cache-{os.getuid()}")


def test_a_temporary_cache_someone_else_made_is_not_used(clean_environment, tmp_path):
    """The temporary cache's name is known: a folder (or a link) another user put there first would have had its
    programs and fine-tunes loaded. A fresh folder of this user's is used instead."""
    import tempfile

    clean_environment.setattr(Path, "home", classmethod(lambda cls: (_ for _ in ()).throw(RuntimeError("no home"))))
    clean_environment.setattr(tempfile, "tempdir", str(tmp_path))
    planted = tmp_path / "elsewhere"
    planted.mkdir(mode=0o777)
    (tmp_path / f"streamrestore-cache-{os.getuid()}").symlink_to(planted)
    root = cache_root()
    assert root.parent == tmp_path and root.name.startswith("streamrestore-cache-") and not root.is_symlink()
    assert root.resolve() != planted.resolve() and root.stat().st_mode & 0o777 == 0o700


def test_a_cached_file_others_can_change_or_own_is_not_loaded(tmp_path, caplog):
    """With the cache root from the environment on a shared folder (XDG_CACHE_HOME=/shared), an ONNX program
    that another user owned and anyone could write was loaded, saying nothing. A cache of one's own is trusted
    whatever its modes show (umask 002 writes files group-writable; exFAT and WSL's /mnt show 0777)."""
    import logging
    import os

    from streamrestore.cache_dir import trusted_cached_file, untrusted_reason

    engines = tmp_path / "engines"
    engines.mkdir()
    program = engines / "lite-0.onnx"
    program.write_bytes(b"x")
    assert not trusted_cached_file(engines / "missing.onnx", "ONNX program")
    for mode in (0o644, 0o664, 0o666, 0o777):  # (this user's folder)
        os.chmod(program, mode)
        assert untrusted_reason(program) is None and trusted_cached_file(program, "ONNX program")
    if os.getuid() != 0:
        pytest.skip("only root can give a file away")
    os.chown(program, 65534, 65534)
    with caplog.at_level(logging.WARNING):
        assert not trusted_cached_file(program, "ONNX program")
    assert f"not loading the cached ONNX program {program}: another user (uid 65534) owns it; making it again" in \
        caplog.text
    os.chown(program, 0, 0)
    os.chown(engines, 65534, 65534)  # another user's folder
    os.chmod(program, 0o666)
    assert untrusted_reason(program).startswith("anyone can change it (mode 666)")
    os.chmod(program, 0o664)
    assert untrusted_reason(program) is None  # (group-writable: not anyone)
    os.chmod(engines, 0o777)  # writable by all: the file can be replaced
    assert "anyone can replace it" in untrusted_reason(program)
    os.chmod(engines, 0o1777)  # (the sticky bit: only a file's owner may replace it, as in /tmp)
    assert untrusted_reason(program) is None


def test_a_cache_an_older_version_kept_elsewhere_is_named(clean_environment, tmp_path, capsys):
    """Before one cache root, --adapt's fine-tunes went to ~/.cache/streamrestore whatever $STREAMRESTORE_HOME
    said: after an upgrade `cache` showed an empty place and `--clear all` deleted nothing, the person's
    fine-tune left on disk unsaid. Other folders a cache may be in are named with what they hold."""
    home = Path(os.environ["HOME"])
    old = home / ".cache" / "streamrestore" / "adapted" / ("a" * 32 + ".safetensors")
    old.parent.mkdir(parents=True)
    old.write_bytes(b"x" * 2000)
    clean_environment.setenv("STREAMRESTORE_HOME", str(tmp_path / "now"))
    assert main(["cache"]) == 0
    also = (f"also: {home / '.cache' / 'streamrestore'} holds adapted 1 file(s), 2.0 kB, kept there by an older "
            f"version or under other variables; STREAMRESTORE_CACHE={home / '.cache' / 'streamrestore'} streamrestore "
            "cache --clear PLACE deletes them")
    assert also in capsys.readouterr().out
    assert main(["cache", "--clear", "adapted"]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == [also] and old.exists()  # (not another folder's to clear)
    assert main(["cache", "--clear", "engines"]) == 0  # (it holds none of those: not named)
    assert "also:" not in capsys.readouterr().out
    clean_environment.setenv("STREAMRESTORE_CACHE", str(home / ".cache" / "streamrestore"))
    assert main(["cache", "--clear", "all"]) == 0 and not old.exists()
    clean_environment.delenv("STREAMRESTORE_CACHE")
    assert main(["cache"]) == 0 and "also:" not in capsys.readouterr().out


def test_the_folders_made_for_the_cache_are_private_and_a_callers_own_are_not(clean_environment, tmp_path):
    """XDG asks a cache's folders be made 0700 (mkdir -p made them 0755); a folder a caller named elsewhere (a
    team's engine folder) keeps the default mode, a person's fine-tunes' folder is private wherever it is."""
    import stat

    from streamrestore.cache_dir import make_cache_folders

    clean_environment.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    umask = os.umask(0o022)
    try:
        make_cache_folders(tmp_path / "xdg" / "streamrestore" / "engines")
        make_cache_folders(tmp_path / "team" / "engines")
        make_cache_folders(tmp_path / "mine" / "adapted", private=True)
    finally:
        os.umask(umask)
    mode = lambda *parts: stat.S_IMODE(tmp_path.joinpath(*parts).stat().st_mode)  # noqa: E731
    assert mode("xdg") == mode("xdg", "streamrestore") == mode("xdg", "streamrestore", "engines") == 0o700
    assert mode("team") == mode("team", "engines") == mode("mine") == 0o755 and mode("mine", "adapted") == 0o700
    # a root a variable named: it and what is in it are the cache's, the folders above it are not
    clean_environment.setenv("STREAMRESTORE_CACHE", str(tmp_path / "srv" / "team" / "cache"))
    umask = os.umask(0o022)
    try:
        make_cache_folders(tmp_path / "srv" / "team" / "cache" / "engines")
    finally:
        os.umask(umask)
    assert mode("srv") == mode("srv", "team") == 0o755
    assert mode("srv", "team", "cache") == mode("srv", "team", "cache", "engines") == 0o700

"""The worker's caches belong to the user who runs it."""

import os

import pytest

from beamjobs.worker.caches import default_cache_directory, owned_directory


def test_the_default_caches_are_under_the_users_own_cache_directory(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_directory() == tmp_path / "beamjobs" / "artifacts"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_directory("environments") == (
        tmp_path / "home" / ".cache" / "beamjobs" / "environments"
    )


def test_a_cache_is_made_for_this_user_alone(tmp_path):
    made = owned_directory(tmp_path / "a" / "cache")
    assert made.stat().st_mode & 0o777 == 0o700


@pytest.mark.parametrize("mode", [0o777, 0o775, 0o757])
def test_a_cache_others_may_write_in_is_refused(tmp_path, mode):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(mode)
    with pytest.raises(PermissionError, match="not this user's alone"):
        owned_directory(shared)


def test_a_cache_another_user_owns_is_refused(tmp_path):  # (chown: the tests run as root)
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o700)
    os.chown(theirs, 65534, 65534)
    with pytest.raises(PermissionError, match="owner uid 65534"):
        owned_directory(theirs)

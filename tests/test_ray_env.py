"""Joining a cluster, the parts that need no Ray: loopback addresses, where the token is found, the one-line refusals.

The real cluster is in test_ray_cluster.py; test_private_apis.py checks Ray finds the token where these tests say.
"""

import pytest

from rknas.search import ray_env


@pytest.mark.parametrize("address,loopback", [
    ("127.0.0.1:6379", True), ("127.1.2.3:6379", True), ("localhost:6379", True), ("[::1]:6379", True),
    ("ray://127.0.0.1:10001", True), ("10.0.0.5:6379", False), ("head.example:6379", False), ("[fe80::1]:1", False),
])
def test_loopback_addresses(address, loopback):
    assert ray_env.is_loopback_address(address) is loopback


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An empty HOME and no token variables."""
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in (ray_env.AUTH_MODE_ENV, ray_env.TOKEN_ENV, ray_env.TOKEN_PATH_ENV):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / ".ray").mkdir()
    return tmp_path


def test_token_file_in_home(home):
    assert ray_env.auth_token_source() == (str(home / ".ray" / "auth_token"), False)
    (home / ".ray" / "auth_token").write_text(" \n")
    assert ray_env.auth_token_source()[1] is False  # blank is none
    (home / ".ray" / "auth_token").write_text("tok\n")
    assert ray_env.auth_token_source() == (str(home / ".ray" / "auth_token"), True)


def test_token_variable_then_path_then_home(home, monkeypatch):
    (home / ".ray" / "auth_token").write_text("tok")
    monkeypatch.setenv(ray_env.TOKEN_PATH_ENV, str(home / "missing"))
    assert ray_env.auth_token_source() == (f"RAY_AUTH_TOKEN_PATH ({home / 'missing'})", False)  # no fallback to home
    monkeypatch.setenv(ray_env.TOKEN_ENV, "abc")
    assert ray_env.auth_token_source() == ("RAY_AUTH_TOKEN", True)
    monkeypatch.setenv(ray_env.TOKEN_ENV, "")  # empty: as if unset
    assert ray_env.auth_token_source()[0].startswith("RAY_AUTH_TOKEN_PATH")


@pytest.mark.parametrize("env,token,fragment", [
    ({}, None, "requires an authentication token and none was found ({home}/.ray/auth_token)"),
    ({}, "tok", "refused the authentication token from {home}/.ray/auth_token"),
    ({"RAY_AUTH_TOKEN": "x"}, None, "refused the authentication token from RAY_AUTH_TOKEN"),
    ({"RAY_AUTH_MODE": "disabled"}, "tok", "requires an authentication token, but RAY_AUTH_MODE=disabled turns tokens off"),
])
def test_refusal_is_one_line_that_says_how_to_give_the_token(home, monkeypatch, env, token, fragment):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    if token:
        (home / ".ray" / "auth_token").write_text(token)
    message = str(ray_env._refusal("10.0.0.5:6379"))
    assert message.startswith("the Ray cluster at 10.0.0.5:6379 ") and fragment.format(home=home) in message
    assert "`ray get-auth-token` on its head node" in message and "\n" not in message

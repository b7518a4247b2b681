"""JWTs, CORS and the bootstrap token, against the real server."""

from __future__ import annotations

import time
from collections.abc import Iterator

import jwt
import pytest

from inference_server.security.auth import issue_jwt
from tests.server.api.conftest import MakeServer
from tests.server.server_process import JWT_SECRET, ServerProcess


def test_jwt_roles(server: ServerProcess) -> None:
    reader = issue_jwt(JWT_SECRET, "dashboard", "reader")
    assert server.request("GET", "/api/v1/status", token=reader)[0] == 200
    status, _, body = server.request("POST", "/v1/completions", {"prompt": "x"}, token=reader)
    assert status == 403 and "operator" in body["error"]["message"]
    operator = issue_jwt(JWT_SECRET, "automation", "operator")
    assert (
        server.request("POST", "/v1/completions", {"prompt": "x", "max_tokens": 1}, token=operator)[
            0
        ]
        == 200
    )


@pytest.mark.parametrize(
    ("claims", "secret", "message"),
    [
        ({"sub": "x", "role": "admin", "exp": int(time.time()) - 10}, JWT_SECRET, "expired"),
        (
            {"sub": "x", "role": "admin", "exp": int(time.time()) + 3600},
            "another-secret-of-the-right-length!!",
            "Invalid",
        ),
        ({"sub": "x", "role": "root", "exp": int(time.time()) + 3600}, JWT_SECRET, "role"),
        ({"role": "admin", "exp": int(time.time()) + 3600}, JWT_SECRET, "sub"),
    ],
)
def test_bad_jwts(
    server: ServerProcess, claims: dict[str, object], secret: str, message: str
) -> None:
    token = jwt.encode(claims, secret, algorithm="HS256")
    status, _, body = server.request("GET", "/api/v1/status", token=token)
    assert status in (401, 403)
    assert message in body["error"]["message"]


@pytest.fixture(scope="module")
def cors_server(make_server: MakeServer) -> Iterator[ServerProcess]:
    proc = make_server({"server": {"cors_origins": ["http://dashboard.local"]}}, name="cors")
    yield proc.start()
    proc.stop()


def test_cors_off_by_default(server: ServerProcess) -> None:
    _, headers, _ = server.request(
        "GET", "/api/v1/status", headers={"Origin": "http://evil.example"}
    )
    assert "Access-Control-Allow-Origin" not in headers


def test_cors_allow_list(cors_server: ServerProcess) -> None:
    _, headers, _ = cors_server.request(
        "GET", "/api/v1/status", headers={"Origin": "http://dashboard.local"}
    )
    assert headers["Access-Control-Allow-Origin"] == "http://dashboard.local"
    _, headers, _ = cors_server.request(
        "GET", "/api/v1/status", headers={"Origin": "http://evil.example"}
    )
    assert "Access-Control-Allow-Origin" not in headers
    status, headers, _ = cors_server.request(
        "OPTIONS",
        "/v1/chat/completions",
        token=None,
        headers={
            "Origin": "http://dashboard.local",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "Authorization, Content-Type",
        },
    )
    assert status == 200
    assert headers["Access-Control-Allow-Origin"] == "http://dashboard.local"


def test_bootstrap_admin_token(make_server: MakeServer) -> None:
    """No tokens configured: the server keeps a private admin token instead of running open."""
    proc = make_server(name="bootstrap")
    settings = proc.config_path.read_text().replace("api_tokens:", "unused_tokens:")
    proc.config_path.write_text(settings.replace("jwt_secret:", "unused_secret:"))
    # The two keys above are unknown settings now: prove they are refused with the key named.
    proc.process = None
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "inference_server", "--config", str(proc.config_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "security.unused_tokens: unknown setting" in result.stderr
    # Now with no credentials at all.
    import yaml

    data = yaml.safe_load(proc.config_path.read_text())
    data["security"] = {"rate_limit_per_minute": 0}
    proc.config_path.write_text(yaml.safe_dump(data))
    proc.start()
    try:
        token_file = proc.data_dir / "admin.token"
        assert oct(token_file.stat().st_mode & 0o777) == "0o600"
        token = token_file.read_text().strip()
        assert proc.request("GET", "/api/v1/status", token=None)[0] == 401
        assert proc.request("GET", "/api/v1/status", token=token)[0] == 200
        assert token not in proc.log()
        assert str(token_file) in proc.log()
    finally:
        proc.stop()

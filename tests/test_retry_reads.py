"""The read retry (api.retry) inside the real application's middleware and handlers: a read whose
database connection dies once is answered from its second run; a write is not repeated."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy.exc import OperationalError

from photoembed.api.app import create_app
from photoembed.config import Settings


def _app_whose_database_fails(times: int) -> tuple[TestClient, list[str]]:
    app = create_app(Settings(env="dev"))
    calls: list[str] = []

    @app.api_route("/flaky", methods=["GET", "POST"])
    def flaky() -> dict[str, int]:
        calls.append("run")
        if len(calls) <= times:
            raise OperationalError("SELECT 1", {}, Exception("server closed the connection"))
        return {"runs": len(calls)}

    return TestClient(app), calls


def test_a_read_that_loses_its_connection_once_is_answered_from_its_second_run() -> None:
    client, calls = _app_whose_database_fails(times=1)
    response = client.get("/flaky")
    assert response.status_code == 200, response.text
    assert response.json() == {"runs": 2} and len(calls) == 2


def test_a_read_that_fails_twice_is_a_503_with_retry_after() -> None:
    client, calls = _app_whose_database_fails(times=2)
    response = client.get("/flaky")
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) > 0
    assert len(calls) == 2


def test_a_write_is_not_repeated() -> None:
    client, calls = _app_whose_database_fails(times=1)
    response = client.post("/flaky")
    assert response.status_code == 503
    assert len(calls) == 1

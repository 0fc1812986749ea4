from collections.abc import Iterator

import pytest

from tests.backends import postgres_server

pytest_plugins = ["tests.browser"]  # browser and page: real Chromium for the dashboard tests


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    """One real PostgreSQL server for the whole session (started on first use, always stopped)."""
    with postgres_server() as url:
        yield url

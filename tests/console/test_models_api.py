"""GET /api/models: the published triage models and the shadow's scores, for admins only."""

from __future__ import annotations

from router.modelstore import read_dir
from tests.console.conftest import Served
from tests.router.test_modelstore import TINY


async def test_admins_see_the_published_models_and_agents_do_not(served: Served) -> None:
    live = await served.rt.models.publish(read_dir(TINY), "alice", "first")
    shadow = await served.rt.models.publish(read_dir(TINY), "bob", shadow=True)
    async with served.api(await served.user("root", "admin")) as api:
        got = (await api.get("/api/models")).json()
    assert (got["live"], got["shadow"], got["observed"]) == (live.number, shadow.number, 0)
    assert [(v["number"], v["author"], v["digest"]) for v in got["versions"]] == [
        (1, "alice", live.digest),
        (2, "bob", shadow.digest),
    ]
    assert got["corrected"]["messages"] == 0
    async with served.api(await served.user("ann", "agent", ("payments",))) as api:
        assert (await api.get("/api/models")).status_code == 403

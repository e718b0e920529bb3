"""The TWS wire protocol as a raw socket sees it: handshake, framing, layouts, broken clients."""

from __future__ import annotations

import pytest
from sim_support import wait_until
from simulator_wire import (
    WireClient,
    frame,
    handshake,
    req_contract_details,
    split_frames,
    start_api,
)

from ingestion.simulator.server import Simulator


async def connected(port: int, versions: str = "v157..178", client_id: int = 1) -> WireClient:
    client = await WireClient.connect(port)
    await client.send(handshake(versions))
    await client.read_frames(1)
    await client.send(start_api(client_id))
    await client.read_frames(6)  # version reply, managedAccounts, nextValidId, three farm notices
    return client


class TestHandshake:
    @pytest.mark.parametrize(
        ("versions", "expected"),
        [("v157..178", "178"), ("v157..176", "176"), ("v100..157", "157"), ("v100..226", "178")],
    )
    async def test_version_is_min_of_178_and_client_max(self, sim: Simulator, versions: str, expected: str):
        """The version reply has exactly two fields: min(178, client max) and a connection time."""
        client = await WireClient.connect(sim.port)
        await client.send(handshake(versions))
        frames = await client.read_frames(1)
        assert len(frames[0]) == 2
        assert frames[0][0] == expected
        await client.close()

    async def test_client_min_above_178_is_refused(self, sim: Simulator):
        """A client that only speaks versions above 178 is closed without a reply."""
        client = await WireClient.connect(sim.port)
        await client.send(handshake("v180..190"))
        assert await client.closed_by_server()
        assert client.received == b""

    async def test_nothing_after_version_reply_until_start_api(self, sim: Simulator):
        """Between the version reply and startApi the gateway sends nothing (ibapi drops extra bytes)."""
        client = await WireClient.connect(sim.port)
        await client.send(handshake())
        data = await client.read_for(0.3)
        frames, rest = split_frames(data)
        assert len(frames) == 1
        assert rest == b""
        await client.close()

    async def test_start_api_gets_accounts_next_id_and_farm_notices(self, sim: Simulator):
        """After startApi: managedAccounts, nextValidId (fixed), then farm-OK notices 2104, 2106, 2158."""
        client = await connected(sim.port)
        frames = split_frames(bytes(client.received))[0][1:]
        assert frames[0] == ["15", "1", "DU1234567"]
        assert frames[1] == ["9", "1", "1"]
        assert [f[3] for f in frames[2:5]] == ["2104", "2106", "2158"]
        assert frames[2] == ["4", "2", "-1", "2104", "Market data farm connection is OK:usfarm", ""]
        await client.close()

    async def test_error_layout_below_166_has_no_advanced_reject_field(self, sim: Simulator):
        """At version 157 an error is ``4,2,reqId,code,msg`` (ibapi 9.81 needs exactly that)."""
        client = await connected(sim.port, "v100..157")
        frames = split_frames(bytes(client.received))[0]
        assert frames[3] == ["4", "2", "-1", "2104", "Market data farm connection is OK:usfarm"]
        await client.close()


class TestContractData:
    async def test_layout_at_178_has_no_version_field(self, sim: Simulator):
        """At >= 164 CONTRACT_DATA starts ``10,reqId,SPY`` and ends with minSize, sizeIncrement, suggested."""
        client = await connected(sim.port)
        await client.send(req_contract_details(5, "SPY"))
        frames = await client.read_frames(8)
        data, end = frames[6], frames[7]
        assert data[:3] == ["10", "5", "SPY"]
        assert data[12] == "756733"
        assert data[-3:] == ["0.0001", "0.0001", "100"]
        assert end == ["52", "1", "5"]
        await client.close()

    async def test_layout_at_157_has_version_and_md_size_multiplier(self, sim: Simulator):
        """Below 164 CONTRACT_DATA carries version 8 after the id and mdSizeMultiplier after minTick."""
        client = await connected(sim.port, "v100..157")
        await client.send(req_contract_details(5, "QQQ"))
        data = (await client.read_frames(8))[6]
        assert data[:4] == ["10", "8", "5", "QQQ"]
        assert data[14:16] == ["0.01", "1"]
        assert data[-1] == "ETF"
        await client.close()

    async def test_unknown_symbol_gets_error_200(self, sim: Simulator):
        """An unknown contract is answered with error 200 for that request id, and nothing else."""
        client = await connected(sim.port)
        await client.send(req_contract_details(9, "NOPE"))
        frames = await client.read_frames(7)
        assert frames[6][:4] == ["4", "2", "9", "200"]
        await client.close()


class TestBrokenClients:
    @pytest.mark.parametrize(
        "garbage",
        [
            b"GET / HTTP/1.1\r\n\r\n",  # not the API prefix
            handshake() + b"\x7f\xff\xff\xff",  # oversized frame header
            handshake() + frame(71, 2, 1, "")[:-1] + b"x",  # last field not NUL-terminated
            handshake() + frame("hello", 1),  # message id is not a number
        ],
        ids=["wrong-prefix", "oversized", "unterminated", "non-numeric-id"],
    )
    async def test_garbage_closes_only_that_client(self, sim: Simulator, garbage: bytes):
        """Garbage closes the offending client; a healthy client keeps being served."""
        healthy = await connected(sim.port, client_id=1)
        bad = await WireClient.connect(sim.port)
        await bad.send(garbage)
        assert await bad.closed_by_server()
        before = len(healthy.received)
        await healthy.send(frame(49, 1))
        frames = await healthy.read_frames(7)
        assert frames[-1][0] == "49"
        assert len(healthy.received) > before
        await healthy.close()

    async def test_truncated_request_closes_client(self, sim: Simulator):
        """A request with too few fields is treated as garbage: the client is closed."""
        client = await connected(sim.port)
        await client.send(frame(1, 11, 5))
        assert await client.closed_by_server()

    async def test_client_disconnecting_mid_frame_is_forgotten(self, sim: Simulator):
        """A client that dies in the middle of a frame leaves no connection behind."""
        client = await connected(sim.port)
        await client.send(frame(49, 1)[:3])
        await client.close()
        await wait_until(lambda: sim.connections == 0)

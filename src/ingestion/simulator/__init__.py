"""An IB Gateway simulator that speaks the real TWS socket protocol (ib_async, ib_insync, ibapi).

Public API::

    from ingestion.simulator import SimulatorConfig, running_simulator

    async with running_simulator(SimulatorConfig(port=0, control_port=0, rate=0)) as sim:
        sim.port, sim.control_port          # the bound ports
        sim.snapshot_stats()                # the GET /stats body ("sent", "market", "hmds")
        sim.tape("SPY", start_ms, end_ms)   # the trades the market produced (GET /tape)
        sim.disconnect_all(); await sim.restart(down=2.0); sim.send_system_message(1100)
        sim.silence(3.0); sim.set_rate(5000); sim.burst(10_000); sim.pause(); sim.resume()
        sim.reset_depth(); sim.reset_stats(); sim.depth_book(client_id, req_id); sim.set_hmds("down")

The market (``market.SymbolMarket``, one per symbol, on a tape) runs whether or not anyone listens;
``running_simulator(config, clock=...)`` stamps it with a clock of the caller's. History is served
from it by ``history.HistoricalFarm``.

The control HTTP API is described in ``ingestion.simulator.control``.
"""

from ingestion.simulator.config import SimulatorConfig
from ingestion.simulator.server import Simulator, running_simulator

__all__ = ["Simulator", "SimulatorConfig", "running_simulator"]

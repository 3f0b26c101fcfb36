"""The Agones link's rules, one by one: the health token, backoff, labels, the SDK's JSON.

The health cadence runs under trio's MockClock against a recording fake of
the SDK (the sidecar is the one thing we stand in for); the REST client is
tested against the HTTP stand-in (``tests/agones_standin.py``), a real
server on a loopback port.
"""

from __future__ import annotations

import math
import socket
import threading
from collections.abc import Iterator
from contextlib import aclosing, suppress
from typing import Any, cast

import attrs
import pytest
import trio
import trio.testing
from agones_standin import SdkStandIn

from supervisor import Config, ConfigError, Phase, Supervisor
from supervisor._agones import attach_agones, link_for
from supervisor._agones._link import (
    AgonesLink,
    Backoff,
    HealthGate,
    UpdateBudget,
    deliver,
    label_value,
)
from supervisor._agones._sdk import MAX_ANSWER, MAX_WATCH_LINE, AgonesSDK, SdkError
from supervisor._agones._state import GameServerState
from supervisor._core._config_agones import AgonesConfig


@pytest.fixture
def standin() -> Iterator[SdkStandIn]:
    with SdkStandIn() as sidecar:
        yield sidecar


class TestConfig:
    def test_off_by_default_on_with_the_variable(self) -> None:
        """Agones naming its sidecar turns the link on; the port comes from it."""
        cfg = AgonesConfig()
        assert not cfg.active({})
        assert cfg.active({"AGONES_SDK_HTTP_PORT": "9400"})
        assert cfg.sdk_port({"AGONES_SDK_HTTP_PORT": "9400"}) == 9400
        assert cfg.sdk_port({}) == 9358
        assert AgonesConfig(port=9001).sdk_port({"AGONES_SDK_HTTP_PORT": "9400"}) == 9001

    @pytest.mark.parametrize(
        "text",
        ["abc", "0", "70000", "-1", "9358; rm", "1e3", "9" * 5000, "\u0663\u0660\u0660\u0660"],
    )
    def test_a_bad_port_variable_is_one_error(self, text: str) -> None:
        """A port variable that is not a port is a ConfigError naming the variable."""
        with pytest.raises(ConfigError, match="AGONES_SDK_HTTP_PORT"):
            AgonesConfig().sdk_port({"AGONES_SDK_HTTP_PORT": text})

    @pytest.mark.parametrize(
        ("table", "key"),
        [
            ({"health_interval": 0}, "agones.health_interval"),
            ({"health_interval": math.nan}, "agones.health_interval"),
            ({"port": 70000}, "agones.port"),
            ({"players_counter": "a/b"}, "agones.players_counter"),
            ({"players_counter": math.nan}, "agones.players_counter"),  # found by hypothesis
            ({"enabld": True}, "agones.enabld"),
        ],
    )
    def test_bad_settings_name_their_key(self, table: dict[str, Any], key: str) -> None:
        """Every bad [agones] value is refused at load, naming the key."""
        with pytest.raises(ConfigError) as info:
            Config.from_mapping({"agones": table}, env={})
        assert info.value.key == key

    def test_environment_override(self) -> None:
        """``SUPERVISOR_AGONES_*`` variables set the section like every other."""
        config = Config.from_mapping({}, env={"SUPERVISOR_AGONES_ENABLED": "true"})
        assert config.agones.enabled

    def test_attach_only_when_on(self) -> None:
        """Off: nothing attached; on: two services and a status section."""
        sup = Supervisor(persist=False)
        assert attach_agones(sup, env={}) is None
        assert not sup.services
        link = attach_agones(sup, env={"AGONES_SDK_HTTP_PORT": "9400"})
        assert link is not None
        assert link_for(sup) is link
        assert [s.__name__ for s in sup.services] == ["agones_lifecycle", "agones_watch"]
        assert sup.status().as_dict()["agones"]["sdk"] == "http://127.0.0.1:9400"


class TestRules:
    def test_backoff_doubles_to_its_cap_and_resets(self) -> None:
        """A failing sidecar is retried at 0.1, 0.2, 0.4... up to the cap; success resets."""
        backoff = Backoff(0.1, 1.0)
        assert [backoff.next() for _ in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
        backoff.reset()
        assert backoff.next() == 0.1

    async def test_update_budget_paces_a_flood(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """120 updates at 50 a second: the last is handled at 2 s, never sooner."""
        budget = UpdateBudget(50)
        done = []
        for _ in range(120):
            await budget.spend()
            done.append(trio.current_time())
        assert done[48] == 0.0
        assert done[49] == 1.0  # the 50th waits for the next second
        assert done[-1] == 2.0

    def test_health_gate_follows_the_tick_counter(self) -> None:
        """A ping goes only if the loop ticked since the last look, or an emergency waits."""
        tick = [0]
        waiting = [False]
        gate = HealthGate(tick=lambda: tick[0], waiting=lambda: waiting[0])
        assert gate.ok()  # the first look
        assert not gate.ok()  # no tick since
        tick[0] += 3
        assert gate.ok()
        assert not gate.ok()
        waiting[0] = True
        assert gate.ok()

    @pytest.mark.parametrize(
        ("text", "label"),
        [
            ("production", "production"),
            ("my profile/\u00e9", "my-profile"),
            ("-x-", "x"),
            ("a" * 80, "a" * 63),
        ],
    )
    def test_label_values_are_kubernetes_label_values(self, text: str, label: str) -> None:
        """A profile name from the config becomes a label value Kubernetes accepts."""
        assert label_value(text) == label


@attrs.define
class _Run:
    last_tick_at: float | None = 0.0
    startup_error: Exception | None = None
    emergency_reason: str | None = None
    snapshot_written: bool = False
    emergency_done: trio.Event = attrs.field(factory=trio.Event)


@attrs.define
class _Sup:
    """The few things the link reads of a supervisor, moved by the test."""

    closing: trio.Event = attrs.field(factory=trio.Event)
    tick: int = 0
    phase: Phase = Phase.DEVELOPMENT
    run_state: _Run = attrs.field(factory=_Run)
    gauges: dict[str, float] = attrs.field(factory=dict)


@attrs.define
class _Sdk:
    """Records the virtual time of each call."""

    calls: list[tuple[str, float]] = attrs.field(factory=list)

    async def health(self) -> None:
        self.calls.append(("health", trio.current_time()))

    async def shutdown(self) -> None:
        self.calls.append(("shutdown", trio.current_time()))


def _link(sup: _Sup) -> AgonesLink:
    return AgonesLink(
        sup=cast(Supervisor, sup),
        port=1,
        timeout=1.0,
        health_interval=1.0,
        backoff_max=5.0,
        players_gauge="players",
        players_counter="players",
        labels=True,
        shutdown_on_emergency=True,
        log=_Log(),
    )


class _Log:
    def __getattr__(self, _name: str) -> Any:
        return lambda *a, **k: None


class TestHealthCadence:
    async def test_pings_stop_while_the_loop_stalls(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A tick every 0.5 s but none from 2.0 s to 6.5 s: no ping at 3, 4, 5 and 6 s."""
        sup = _Sup()
        link = _link(sup)
        sdk = _Sdk()

        async def loop() -> None:
            t = 0.0
            while t < 11.5:
                if not 2.0 <= t < 6.5:  # the stall: the tick counter does not move
                    sup.tick += 1
                t += 0.5
                await trio.sleep_until(t)
            sup.closing.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(loop)
            await link._health(cast(AgonesSDK, sdk))
        times = [at for what, at in sdk.calls if what == "health"]
        assert times == [0.0, 1.0, 2.0, 7.0, 8.0, 9.0, 10.0, 11.0]
        assert link.health_withheld == 4

    async def test_pings_go_on_in_an_emergency_until_shutdown(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """The emergency handler waiting for an operator is alive: pings go on with no tick."""
        sup = _Sup(phase=Phase.EMERGENCY_SHUTDOWN)
        link = _link(sup)
        sdk = _Sdk()

        async def later() -> None:
            await trio.sleep(3.5)
            link.shutdown_sent = True
            await trio.sleep(2)
            sup.closing.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(later)
            await link._health(cast(AgonesSDK, sdk))
        assert [at for _, at in sdk.calls] == [0.0, 1.0, 2.0, 3.0]


class TestPlayersCounter:
    async def test_capped_at_capacity_and_not_resent(self, standin: SdkStandIn) -> None:
        """25 players, capacity 10: refused once, then 10; more players send nothing new."""
        standin.counters["players"] = (0, 10)
        sup = _Sup(gauges={"players": 25})
        link = attrs.evolve(_link(sup), port=standin.port, labels=False)
        async with link.open_sdk() as sdk:
            await link._sync_once(sdk)  # Ready; 25 refused (OUT_OF_RANGE); capacity read
            await link._sync_once(sdk)  # 10 written
            sup.gauges["players"] = 30
            await link._sync_once(sdk)  # still 10: nothing sent
            sup.gauges["players"] = 4
            await link._sync_once(sdk)
        patches = [c.body["count"] for c in standin.calls if c.method == "PATCH"]
        assert patches == ["25", "10", "4"]
        assert standin.counters["players"] == (4, 10)
        assert link.players_capacity == 10
        assert link.status()["players"] == 4

    async def test_a_missing_counter_is_said_once(self, standin: SdkStandIn) -> None:
        """A GameServer without the Counter: one try, then the link stops asking."""
        standin.counters.clear()
        sup = _Sup(gauges={"players": 3})
        link = attrs.evolve(_link(sup), port=standin.port, labels=False)
        async with link.open_sdk() as sdk:
            for players in (3, 4, 5):
                sup.gauges["players"] = players
                await link._sync_once(sdk)
        assert [c.method for c in standin.calls].count("PATCH") == 1
        assert link.status()["players_counter"] == "missing"
        assert link.sdk_errors == 0  # not the sidecar's failure


class TestState:
    def test_reads_the_sidecars_json(self) -> None:
        """int64s as strings, the state, ports, labels and counters."""
        state = GameServerState.from_json(
            {
                "object_meta": {"name": "gs-1", "labels": {"a": "b", "n": 1}},
                "status": {
                    "state": "Allocated",
                    "address": "10.0.0.1",
                    "ports": [{"name": "game", "port": 7777}, {"port": "x"}],
                    "counters": {"players": {"count": "12", "capacity": "100"}},
                },
            }
        )
        assert state.allocated
        assert not state.reserved
        assert state.ports == (("game", 7777),)
        assert state.labels == {"a": "b"}
        assert state.counters == {"players": (12, 100)}

    @pytest.mark.parametrize(
        "body",
        [None, [], "x", {"object_meta": 3, "status": []}, {"status": {"state": 5, "ports": {}}}],
    )
    def test_wrong_types_are_left_out(self, body: Any) -> None:
        """A GameServer of the wrong shape gives empty fields, never an exception."""
        state = GameServerState.from_json(body)
        assert state.state == ""
        assert state.ports == ()

    def test_control_characters_are_escaped(self) -> None:
        """A name with an escape sequence reaches logs and terminals escaped."""
        state = GameServerState.from_json(
            {"object_meta": {"name": "gs\x1b[2J", "labels": {"k\n": "v\r"}}}
        )
        assert state.name == "gs\\x1b[2J"
        assert state.labels == {"k\\n": "v\\r"}

    def test_delivered_to_systems_that_ask(self) -> None:
        """Only systems declaring ``agones_gameserver`` get the state, on the instance."""

        class Asks:
            agones_gameserver: GameServerState | None = None

            def tick(self, ctx: Any) -> None:
                pass

        class DoesNot:
            def tick(self, ctx: Any) -> None:
                pass

        sup = Supervisor(persist=False)
        sup.register(Asks(), name="asks")
        sup.register(DoesNot(), name="not")
        state = GameServerState(state="Allocated")
        assert deliver(sup, state) == 1
        assert sup.system("asks").agones_gameserver is state
        assert not hasattr(sup.system("not"), "agones_gameserver")


class TestSdk:
    async def test_calls_and_int64_strings(self, standin: SdkStandIn) -> None:
        """Ready, labels, the counter (int64 as strings both ways), the GameServer."""
        async with AgonesSDK(standin.port, timeout=2.0) as sdk:
            await sdk.ready()
            await sdk.health()
            await sdk.set_label("phase", "testing")
            assert await sdk.set_counter("players", 42) == 42
            assert await sdk.get_counter("players") == (42, 100)
            gs = await sdk.gameserver()
        assert gs.state == "Ready"
        assert gs.labels == {"agones.dev/sdk-phase": "testing"}
        assert gs.counters == {"players": (42, 100)}
        patch = next(c for c in standin.calls if c.method == "PATCH")
        assert patch.body == {"count": "42"}

    async def test_errors_carry_the_grpc_code(self, standin: SdkStandIn) -> None:
        """``{"code","message"}`` answers become SdkError with the code and the status."""
        async with AgonesSDK(standin.port, timeout=2.0) as sdk:
            standin.fail_next = 1
            with pytest.raises(SdkError) as failed:
                await sdk.ready()
            assert (failed.value.code, failed.value.status) == (2, 500)
            assert "injected failure" in failed.value.message
            with pytest.raises(SdkError) as missing:
                await sdk.set_counter("sessions", 1)
            assert missing.value.not_found
            with pytest.raises(SdkError) as over:
                await sdk.set_counter("players", 1000)
            assert over.value.code == 11

    async def test_no_sidecar_is_an_sdk_error(self) -> None:
        """Nothing listening: an SdkError, quickly, not a hang."""
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        async with AgonesSDK(port, timeout=1.0) as sdk:
            with trio.fail_after(3), pytest.raises(SdkError):
                await sdk.health()

    async def test_watch_streams_each_change(self, standin: SdkStandIn) -> None:
        """WatchGameServer yields the GameServer now, then after each change."""
        seen: list[str] = []
        async with AgonesSDK(standin.port, timeout=2.0) as sdk:
            with trio.fail_after(5):
                async with aclosing(sdk.watch()) as states:
                    async for state in states:
                        seen.append(state.state)
                        if state.state == "Scheduled":
                            standin.allocate()
                        if state.allocated:
                            break
        assert seen == ["Scheduled", "Allocated"]

    @pytest.mark.parametrize(
        "line",
        [b"not json\n", b'{"error": {"message": "boom"}}\n', b"x" * (MAX_WATCH_LINE + 2)],
    )
    async def test_a_hostile_watch_stream_is_an_error(self, line: bytes) -> None:
        """Garbage, an error line or an endless line from the sidecar: SdkError, bounded."""

        async def drain(sdk: AgonesSDK) -> None:
            async with aclosing(sdk.watch()) as states:
                async for _ in states:
                    pass

        with _raw_server(line) as port:
            async with AgonesSDK(port, timeout=2.0) as sdk:
                with trio.fail_after(5), pytest.raises(SdkError):
                    await drain(sdk)

    async def test_an_endless_answer_is_cut(self) -> None:
        """An answer longer than MAX_ANSWER is an SdkError, not a memory hog."""
        with _raw_server(b"x" * (MAX_ANSWER + 10)) as port:
            async with AgonesSDK(port, timeout=5.0) as sdk:
                with pytest.raises(SdkError, match="answer over"):
                    await sdk.ready()

    @pytest.mark.parametrize("watch", [False, True])
    async def test_a_hang_up_before_the_answer(self, watch: bool) -> None:
        """The sidecar closes the connection without answering: an SdkError, at once."""

        async def first(sdk: AgonesSDK) -> None:
            if watch:
                async with aclosing(sdk.watch()) as states:
                    await states.__anext__()
            else:
                await sdk.health()

        with _raw_server(b"", head=False) as port:
            async with AgonesSDK(port, timeout=5.0) as sdk:
                with trio.fail_after(3), pytest.raises(SdkError):
                    await first(sdk)

    async def test_a_silent_sidecar_is_bounded_by_the_timeout(self) -> None:
        """A sidecar that accepts and never answers: SdkError after the timeout, not a hang."""
        with _raw_server(b"", silent=True) as port:
            async with AgonesSDK(port, timeout=0.3) as sdk:
                with trio.fail_after(3), pytest.raises(SdkError, match="TooSlow"):
                    await sdk.health()


class _Raw(threading.Thread):
    def __init__(self, body: bytes, *, silent: bool = False, head: bool = True) -> None:
        super().__init__(daemon=True)
        self.head = head
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.body = body
        self.silent = silent
        self.done = threading.Event()

    def run(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            conn.recv(65536)
            if self.silent:  # read the request, answer nothing until the test ends
                self.done.wait(10)
                return
            head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n"
            if not self.head:
                head = b""
            with suppress(OSError):  # the client may hang up on an endless line
                conn.sendall(head + self.body)


class _raw_server:
    """A server answering one request with a fixed watch stream, then closing."""

    def __init__(self, body: bytes, *, silent: bool = False, head: bool = True) -> None:
        self.thread = _Raw(body, silent=silent, head=head)

    def __enter__(self) -> int:
        self.thread.start()
        port: int = self.thread.sock.getsockname()[1]
        return port

    def __exit__(self, *exc: object) -> None:
        self.thread.done.set()
        self.thread.sock.close()

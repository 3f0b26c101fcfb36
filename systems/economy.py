"""The economy: balances, income, and purchases acknowledged only once durable.

Money is integer cents. No balance and no amount may exceed ``MAX_BALANCE``
(10**15 cents): a credit that would pass it is rejected as an ``overflow``,
a purchase above the balance as an ``overdraft``, a non-positive or
non-integer amount as ``invalid_amount``. Guards (the ``security`` system)
may refuse a purchase first (``blocked:<why>``).

Every change of a balance is one ledger entry ``(seq, player, tick, kind,
amount, purchase)``, with ``kind`` one of ``grant`` (a new player's start
money), ``income`` or ``purchase`` (negative, naming the purchase id). So a
balance always equals the sum of its player's ledger, exactly, in memory and
in the database (``tests/test_world.py``, ``TestEconomy``, and
``tests/test_durability.py``).

Income: each online player earns ``rate`` cents per tick, where ``rate`` is
``income`` plus what the rate model (the ``tycoon``'s plots) says their items
yield. Income is not booked every tick: it accrues since ``paid_tick`` and is
paid (one ledger entry) on payday, on leave, and before a purchase changes the
rate. Paydays walk the online list, ``len(online) / payday`` players a tick,
so each player is paid about every ``payday`` ticks and the tick costs the
same however rich the world is.

Durability: a purchase debits the balance at once (it cannot be spent twice)
and is *pending*. The economy never writes anything: it queues ledger
entries, purchases and dirty accounts, and a store (the ``datastore``)
``drain()``s them at the end of the tick, commits them in one transaction and
calls ``committed()``, which marks the purchases acknowledged, calls their
``on_ack`` callbacks and the ``ack_listeners``, and forgets players that left.
Without a store nothing is ever acknowledged.

Restore: ``snapshot()`` carries the accounts and the queue, so a world without
a store continues exactly. With a store the database is the truth: when the
store starts (after every ``restore`` and after this system's ``start``) it
calls ``attach_store``, which drops the queued entries (never acknowledged,
and either already committed or lost with the process) and reloads every
online player's account from the database. See ``systems/datastore.py``.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import attrs

from supervisor import Context

if TYPE_CHECKING:
    from .players import Players

__all__ = [
    "MAX_BALANCE",
    "Account",
    "AccountStore",
    "Batch",
    "Economy",
    "LedgerEntry",
    "Purchase",
    "Rejection",
    "StoredAccount",
]

#: The largest balance, and the largest amount, in cents (ten trillion dollars).
MAX_BALANCE = 10**15

#: ``(seq, player, tick, kind, amount, purchase id or None)``: one balance change.
LedgerEntry = tuple[int, int, int, str, int, int | None]

#: Income model: a player's items -> extra income in cents per tick.
RateModel = Callable[[Mapping[str, int]], int]

#: A guard: ``(player, amount, item, now)`` -> None to allow, or why it refuses.
Guard = Callable[[int, int, str, float], str | None]


@attrs.define(eq=False)
class Account:
    """One player's money in memory; ``items`` counts what they bought, by item name."""

    pid: int
    balance: int
    earnings: int = 0
    paid_tick: int = 0
    rate: int = 0
    online: bool = False
    items: dict[str, int] = attrs.field(factory=dict)


@attrs.define(eq=False)
class Purchase:
    """A purchase: ``pending`` until the store committed it, then ``acknowledged``.

    ``dropped`` means the process restarted before it was committed: it was
    never acknowledged and its debit is gone with it.
    """

    id: int
    player: int
    amount: int
    item: str
    tick: int
    status: str = "pending"
    ack_tick: int | None = None
    on_ack: Callable[[Purchase], None] | None = attrs.field(default=None, repr=False)


@attrs.frozen
class Rejection:
    """A purchase refused, and why (``overdraft``, ``overflow``, ``blocked:rate_limit``, ...)."""

    player: int
    amount: Any
    item: str
    reason: str
    tick: int


@attrs.frozen
class StoredAccount:
    """An account as the store keeps it."""

    balance: int
    earnings: int
    paid_tick: int
    items: Mapping[str, int]


class AccountStore(Protocol):
    """What the economy needs from its store (the ``datastore``)."""

    def load_accounts(self, pids: Sequence[int]) -> dict[int, StoredAccount]:
        """The stored accounts of those of ``pids`` that exist."""
        ...

    def last_ids(self) -> tuple[int, int]:
        """The last ledger seq and the last purchase id committed (0 for none)."""
        ...


@attrs.define(eq=False)
class Batch:
    """Everything changed since the last ``drain()``: one group commit's worth."""

    ledger: list[LedgerEntry]
    purchases: list[Purchase]
    dirty: set[int]
    leavers: list[int]

    def merge(self, later: Batch | None) -> Batch:
        """This batch followed by ``later`` (a commit that failed is retried with the next)."""
        if later is not None:
            self.ledger.extend(later.ledger)
            self.purchases.extend(later.purchases)
            self.dirty |= later.dirty
            self.leavers.extend(later.leavers)
        return self


def _grant(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_BALANCE:
        raise ValueError(f"{attribute.name} must be an integer of cents from 0 to {MAX_BALANCE}")


def _at_least_one(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{attribute.name} must be an integer of at least 1, got {value!r}")


# Options are validated when the system is built from config; checking every
# later assignment (attrs' default) would put a Python ``__setattr__`` on each
# counter the tick bumps: 1,000 calls, about 2 ms a tick at 100,000 players.
@attrs.define(eq=False, on_setattr=attrs.setters.NO_OP)
class Economy:
    """Balances, income and purchases; critical: the world cannot run without it.

    Args:
        grant: cents a new player starts with.
        income: base income, cents per tick for every online player.
        payday: ticks between two income payouts of a player.
        backlog: pending entries above which ``health()`` says degraded.
    """

    grant: int = attrs.field(default=1_000, validator=_grant)
    income: int = attrs.field(default=1, validator=_grant)
    payday: int = attrs.field(default=300, validator=_at_least_one)
    backlog: int = attrs.field(default=100_000, validator=_at_least_one)
    name: str = "economy"

    critical: ClassVar[bool] = True
    depends_on: ClassVar[tuple[str, ...]] = ("players",)
    priority: ClassVar[int] = 0

    #: Accounts in memory: online players, and leavers until their last save.
    accounts: dict[int, Account] = attrs.field(init=False, factory=dict)
    #: The most recent acknowledged purchases, oldest first.
    acknowledged: collections.deque[Purchase] = attrs.field(
        init=False, factory=lambda: collections.deque(maxlen=1000)
    )
    #: Called with every purchase once it is acknowledged.
    ack_listeners: list[Callable[[Purchase], None]] = attrs.field(init=False, factory=list)
    #: The most recent rejections, oldest first.
    rejections: collections.deque[Rejection] = attrs.field(
        init=False, factory=lambda: collections.deque(maxlen=100)
    )
    #: Rejections by reason, since the world began.
    rejected: dict[str, int] = attrs.field(init=False, factory=dict)
    purchases: int = attrs.field(init=False, default=0)
    acked: int = attrs.field(init=False, default=0)
    dropped: int = attrs.field(init=False, default=0)
    #: The tick being run, and simulated seconds since the world began.
    tick_no: int = attrs.field(init=False, default=0)
    clock: float = attrs.field(init=False, default=0.0)
    next_seq: int = attrs.field(init=False, default=1)
    next_purchase: int = attrs.field(init=False, default=1)

    _ledger: list[LedgerEntry] = attrs.field(init=False, factory=list)
    _pending: list[Purchase] = attrs.field(init=False, factory=list)
    _dirty: set[int] = attrs.field(init=False, factory=set)
    _leavers: list[int] = attrs.field(init=False, factory=list)
    _cursor: int = attrs.field(init=False, default=0)
    _online_count: int = attrs.field(init=False, default=0)
    _epoch: int = attrs.field(init=False, default=-1)
    _players: Players | None = attrs.field(init=False, default=None)
    _store: AccountStore | None = attrs.field(init=False, default=None)
    _model: RateModel | None = attrs.field(init=False, default=None)
    _guards: list[Guard] = attrs.field(init=False, factory=list)
    _log: Any = attrs.field(init=False, default=None)
    #: The restored snapshot left the accounts to the store (cleared once one attaches).
    _accounts_in_store: bool = attrs.field(init=False, default=False)

    # ------------------------------------------------------------------ hooks

    def start(self, ctx: Context) -> None:
        self._players = ctx.system("players")
        self._log = ctx.log
        self.tick_no = ctx.tick
        # Restored accounts match the restored players; a store, when one
        # starts, reloads them anyway (``attach_store``).
        self._epoch = self._players.epoch

    def tick(self, ctx: Context) -> None:
        tick = self.tick_no = ctx.tick
        self.clock += ctx.dt
        players = self._players
        assert players is not None, "economy ticked before start"
        if players.events_tick == tick:
            if players.joined:
                self._join(players.joined, tick)
            if players.left:
                self._leave(players.left, tick)
        if players.epoch != self._epoch or self._online_count != len(players.online):
            self._resync(tick)
        self._payroll(players.online, tick)

    def recover(self, ctx: Context, error: Any) -> None:
        """A failed tick may have left joins or leaves half done: rebuild from ``online``."""
        self._resync(ctx.tick)

    def health(self) -> str:
        return "degraded" if len(self._ledger) > self.backlog else "healthy"

    def snapshot(self) -> dict[str, Any]:
        return {
            "tick": self.tick_no,
            "clock": self.clock,
            "cursor": self._cursor,
            "next_seq": self.next_seq,
            "next_purchase": self.next_purchase,
            # With a store the database is the truth and ``attach_store`` reloads
            # every account after a restore: carrying them here would only make
            # the capture grow with the population (100 ms at 100,000 players).
            "accounts": []
            if self._store is not None
            else [
                [a.pid, a.balance, a.earnings, a.paid_tick, a.online, a.items]
                for a in sorted(self.accounts.values(), key=_pid)
            ],
            "accounts_in_store": self._store is not None,
            "ledger": [list(e) for e in self._ledger],
            "pending": [[p.id, p.player, p.amount, p.item, p.tick] for p in self._pending],
            "dirty": sorted(self._dirty),
            "leavers": list(self._leavers),
            "stats": {
                "purchases": self.purchases,
                "acked": self.acked,
                "dropped": self.dropped,
                "rejected": dict(self.rejected),
            },
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.tick_no = int(state["tick"])
        self.clock = float(state["clock"])
        self._cursor = int(state["cursor"])
        self.next_seq = int(state["next_seq"])
        self.next_purchase = int(state["next_purchase"])
        self.accounts = {}
        for pid, balance, earnings, paid, online, items in state["accounts"]:
            acct = Account(int(pid), int(balance), int(earnings), int(paid), 0, bool(online))
            acct.items = {str(k): int(v) for k, v in items.items()}
            acct.rate = self._rate_of(acct.items)
            self.accounts[acct.pid] = acct
        self._online_count = sum(1 for a in self.accounts.values() if a.online)
        self._ledger = [
            (int(s), int(p), int(t), str(k), int(a), None if r is None else int(r))
            for s, p, t, k, a, r in state["ledger"]
        ]
        self._pending = [
            Purchase(int(i), int(p), int(a), str(item), int(t))
            for i, p, a, item, t in state["pending"]
        ]
        self._dirty = {int(p) for p in state["dirty"]}
        self._leavers = [int(p) for p in state["leavers"]]
        self._accounts_in_store = bool(state.get("accounts_in_store", False))
        stats = state["stats"]
        self.purchases = int(stats["purchases"])
        self.acked = int(stats["acked"])
        self.dropped = int(stats["dropped"])
        self.rejected = {str(k): int(v) for k, v in stats["rejected"].items()}

    # ------------------------------------------------------------------ players

    def _new_account(self, pid: int, tick: int) -> Account:
        acct = Account(pid, 0, paid_tick=tick)
        if self.grant:
            self._book(acct, self.grant, "grant", tick)
        return acct

    def _join(self, pids: Sequence[int], tick: int) -> None:
        accounts = self.accounts
        missing = [pid for pid in pids if pid not in accounts]
        stored = self._store.load_accounts(missing) if self._store and missing else {}
        for pid in pids:
            acct = accounts.get(pid)
            if acct is None:
                row = stored.get(pid)
                if row is None:
                    acct = self._new_account(pid, tick)
                else:
                    acct = Account(pid, row.balance, row.earnings, items=dict(row.items))
                acct.rate = self._rate_of(acct.items)
                accounts[pid] = acct
            if not acct.online:
                acct.online = True
                self._online_count += 1
            # Offline time earns nothing; the session start is saved with the account.
            acct.paid_tick = tick
            self._dirty.add(pid)

    def _leave(self, pids: Iterable[int], tick: int) -> None:
        for pid in pids:
            acct = self.accounts.get(pid)
            if acct is None or not acct.online:
                continue
            self._pay(acct, tick)
            acct.online = False
            self._online_count -= 1
            # Save on leave: this tick's commit writes the account; ``committed``
            # then forgets it (a returning player is loaded from the store).
            self._dirty.add(pid)
            self._leavers.append(pid)

    def _resync(self, tick: int) -> None:
        """Make the online accounts exactly the players' ``online`` list."""
        players = self._players
        assert players is not None
        if self._accounts_in_store:
            # Restored from a snapshot that left the accounts to a store, and no
            # store attached: the online players get fresh accounts. Said once.
            self._accounts_in_store = False
            if self._log is not None:
                self._log.warning(
                    "economy.accounts_in_store",
                    hint="the snapshot left the accounts to the datastore: enable it to keep them",
                )
        present = set(players.online)
        gone = [a.pid for a in self.accounts.values() if a.online and a.pid not in present]
        self._leave(gone, tick)
        accounts = self.accounts
        self._join([p for p in players.online if p not in accounts or not accounts[p].online], tick)
        self._online_count = len(present)
        self._epoch = players.epoch
        if self._log is not None:
            self._log.info("economy.resync", online=len(present), tick=tick)

    # ------------------------------------------------------------------ money

    def _book(
        self, acct: Account, amount: int, kind: str, tick: int, ref: int | None = None
    ) -> None:
        """Change a balance: the one place that does, always with its ledger entry."""
        acct.balance += amount
        seq = self.next_seq
        self.next_seq = seq + 1
        self._ledger.append((seq, acct.pid, tick, kind, amount, ref))
        self._dirty.add(acct.pid)

    def _reject(self, player: int, amount: Any, item: str, reason: str) -> Rejection:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1
        rejection = Rejection(player, amount, item, reason, self.tick_no)
        self.rejections.append(rejection)
        return rejection

    def _pay(self, acct: Account, tick: int) -> None:
        owed = acct.rate * (tick - acct.paid_tick)
        # With nothing owed (a zero rate) ``paid_tick`` need not be saved: it
        # cannot change a later payout. Otherwise the account is dirty, so the
        # database always holds the ``paid_tick`` that matters.
        acct.paid_tick = tick
        if owed > 0:
            if acct.balance + owed > MAX_BALANCE:
                self._reject(acct.pid, owed, "income", "overflow")
                self._dirty.add(acct.pid)
                return
            acct.earnings += owed
            self._book(acct, owed, "income", tick)

    def _payroll(self, online: Sequence[int], tick: int) -> None:
        n = len(online)
        if not n:
            return
        k = -(-n // self.payday)
        start = self._cursor % n
        accounts, pay = self.accounts, self._pay
        for i in range(start, start + k):
            # A KeyError here means the accounts lost track of ``online``: the
            # tick fails and ``recover`` resynchronises.
            pay(accounts[online[i % n]], tick)
        self._cursor = (start + k) % n

    def credit(self, player: int, amount: int, kind: str = "income") -> bool:
        """Add ``amount`` cents to an online player's balance (income counts as earnings).

        Returns:
            False (and a ``Rejection`` is recorded) for an unknown player, an
            invalid amount, or a balance that would pass ``MAX_BALANCE``.
        """
        acct = self.accounts.get(player)
        if type(amount) is not int or amount <= 0:
            self._reject(player, amount, kind, "invalid_amount")
            return False
        if acct is None or not acct.online:
            self._reject(player, amount, kind, "unknown_player")
            return False
        if acct.balance + amount > MAX_BALANCE:
            self._reject(player, amount, kind, "overflow")
            return False
        if kind == "income":
            acct.earnings += amount
        self._book(acct, amount, kind, self.tick_no)
        return True

    def purchase(
        self,
        player: int,
        amount: int,
        item: str = "",
        *,
        on_ack: Callable[[Purchase], None] | None = None,
    ) -> Purchase | Rejection:
        """Buy ``item`` for ``amount`` cents: debited now, acknowledged once durable.

        Guards run first (and see every attempt, impossible ones included);
        then the amount must be a positive integer of at most ``MAX_BALANCE``
        (else ``invalid_amount`` / ``overflow``), the player online
        (``unknown_player``) and able to pay (``overdraft``).

        Args:
            player: the buyer's id.
            amount: the price in cents.
            item: what is bought (counted in the buyer's ``items``); "" for nothing.
            on_ack: called with the purchase once the store has committed it.

        Returns:
            The pending ``Purchase``, or a ``Rejection`` naming the reason.
        """
        for guard in self._guards:
            try:
                refusal = guard(player, amount, item, self.clock)
            except Exception as exc:  # a broken guard fails closed, never open
                self._log_error("economy.guard_failed", exc)
                refusal = "guard_error"
            if refusal is not None:
                return self._reject(player, amount, item, f"blocked:{refusal}")
        if type(amount) is not int or amount <= 0:
            return self._reject(player, amount, item, "invalid_amount")
        if amount > MAX_BALANCE:
            return self._reject(player, amount, item, "overflow")
        acct = self.accounts.get(player)
        if acct is None or not acct.online:
            return self._reject(player, amount, item, "unknown_player")
        tick = self.tick_no
        # Income accrued at the old rate is paid before the purchase changes the rate.
        self._pay(acct, tick)
        if amount > acct.balance:
            return self._reject(player, amount, item, "overdraft")
        pid = self.next_purchase
        self.next_purchase = pid + 1
        self._book(acct, -amount, "purchase", tick, pid)
        if item:
            acct.items[item] = acct.items.get(item, 0) + 1
            acct.rate = self._rate_of(acct.items)
        bought = Purchase(pid, player, amount, item, tick, on_ack=on_ack)
        self._pending.append(bought)
        self.purchases += 1
        return bought

    # ------------------------------------------------------------------ queries

    def balance(self, player: int) -> int | None:
        """The player's balance in cents, or None when not in memory."""
        acct = self.accounts.get(player)
        return None if acct is None else acct.balance

    def items(self, player: int) -> Mapping[str, int]:
        """What the player has bought, by item (empty when not in memory)."""
        acct = self.accounts.get(player)
        return {} if acct is None else acct.items

    @property
    def online_count(self) -> int:
        """Accounts of online players (the rest of ``accounts`` left and await their save)."""
        return self._online_count

    @property
    def pending(self) -> list[Purchase]:
        """Purchases debited but not yet acknowledged, oldest first."""
        return list(self._pending)

    # ------------------------------------------------------------------ collaborators

    def _rate_of(self, items: Mapping[str, int]) -> int:
        model = self._model
        return self.income + (model(items) if model is not None else 0)

    def set_rate_model(self, model: RateModel | None) -> None:
        """Use ``model(items)`` for each player's extra income (the tycoon's plots)."""
        self._model = model
        for acct in self.accounts.values():
            acct.rate = self._rate_of(acct.items)

    def add_guard(self, guard: Guard) -> None:
        """Consult ``guard`` before every purchase (once, however often it is added)."""
        if guard not in self._guards:
            self._guards.append(guard)

    def remove_guard(self, guard: Guard) -> None:
        if guard in self._guards:
            self._guards.remove(guard)

    def _log_error(self, event: str, exc: BaseException) -> None:
        if self._log is not None:
            self._log.error(event, error=type(exc).__name__, message=str(exc))

    # ------------------------------------------------------------------ the store's side

    def attach_store(self, store: AccountStore, tick: int) -> None:
        """Make ``store`` the truth: reload every online account from it (reconcile).

        Called by the store when it starts, which is after every ``restore``.
        Entries still queued (from a snapshot, or from a commit that failed)
        are dropped: none was acknowledged, and each is either committed
        already or lost with the process that made it. Ids continue after the
        store's last ones; paydays continue from the stored ``paid_tick``
        (clamped to ``tick``: when the snapshot is older than the database,
        the ticks in between are simulated again).
        """
        dropped = len(self._pending)
        for p in self._pending:
            p.status = "dropped"
        self.dropped += dropped
        if (dropped or self._ledger) and self._log is not None:
            self._log.warning(
                "economy.reconcile.dropped",
                purchases=dropped,
                ledger_entries=len(self._ledger),
                reason="never committed, so never acknowledged",
            )
        self._ledger, self._pending, self._dirty, self._leavers = [], [], set(), []
        self._store = store
        self._accounts_in_store = False
        last_seq, last_purchase = store.last_ids()
        self.next_seq, self.next_purchase = last_seq + 1, last_purchase + 1
        online = list(self._players.online) if self._players is not None else []
        stored = store.load_accounts(online)
        accounts: dict[int, Account] = {}
        for pid in online:
            row = stored.get(pid)
            if row is None:
                acct = self._new_account(pid, tick)
            else:
                acct = Account(
                    pid, row.balance, row.earnings, min(row.paid_tick, tick), items=dict(row.items)
                )
            acct.online = True
            acct.rate = self._rate_of(acct.items)
            accounts[pid] = acct
        self.accounts = accounts
        self._online_count = len(accounts)
        if self._players is not None:
            self._epoch = self._players.epoch

    def detach_store(self) -> None:
        """The store stopped: keep everything in memory from now on."""
        self._store = None

    def drain(self) -> Batch | None:
        """Hand over everything queued since the last drain (None: nothing)."""
        if not (self._ledger or self._dirty or self._pending):
            return None
        batch = Batch(self._ledger, self._pending, self._dirty, self._leavers)
        self._ledger, self._pending, self._dirty, self._leavers = [], [], set(), []
        return batch

    def rows(self, pids: Iterable[int]) -> list[tuple[int, int, int, int]]:
        """``(id, balance, earnings, paid_tick)`` for the accounts of ``pids`` in memory."""
        accounts = self.accounts
        out = []
        for pid in pids:
            acct = accounts.get(pid)
            if acct is not None:
                out.append((pid, acct.balance, acct.earnings, acct.paid_tick))
        return out

    def committed(self, batch: Batch, tick: int) -> None:
        """``batch`` is durable: acknowledge its purchases and forget saved leavers.

        A callback that raises is logged and does not stop the others.
        """
        acknowledged = self.acknowledged
        listeners = self.ack_listeners
        for p in batch.purchases:
            p.status = "acknowledged"
            p.ack_tick = tick
            acknowledged.append(p)
            callbacks = [p.on_ack, *listeners] if p.on_ack is not None else listeners
            for callback in callbacks:
                try:
                    callback(p)
                except Exception as exc:  # a client's callback must not undo an ack
                    self._log_error("economy.ack_callback_failed", exc)
        self.acked += len(batch.purchases)
        if self._store is not None:
            accounts, dirty = self.accounts, self._dirty
            for pid in batch.leavers:
                acct = accounts.get(pid)
                if acct is not None and not acct.online and pid not in dirty:
                    del accounts[pid]


def _pid(acct: Account) -> int:
    return acct.pid

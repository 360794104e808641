"""Per-client rate limiting (``--rate-limit``): one token bucket per client, shared by all workers.

Why a token bucket: it allows what real clients do (a page load fires a dozen requests at
once, then nothing for a while) while holding every client to the configured pace over any
longer window. Each client has a bucket of ``burst`` tokens that refills at ``count / period``
tokens a second; a request takes one token, and a request finding less than one is refused.
So over any window of T seconds a client is admitted at most ``burst + rate * T`` times,
however many workers serve it.

Why one table for the whole server: a limit per worker would let a client through N times
as often with N workers, and which worker serves a connection is the kernel's choice. So the
table lives in memory every worker maps: an anonymous shared ``mmap`` created before the
supervisor forks (process workers on Linux), a ``multiprocessing.shared_memory`` block where
workers are spawned, or the same ``mmap`` shared by thread workers. Its records are plain
numbers at fixed offsets, read and written through ``memoryview`` casts, so no Python object
is shared between processes.

Why a fixed-size, set-associative table: an attacker who rotates source addresses (an IPv6
client has 2**64 of them in its /64, which is why IPv6 clients are keyed by prefix) must not
grow the server's memory. ``max_clients`` slots are grouped in sets of :data:`WAYS`; a client
hashes (with a per-server random secret, so nobody can aim at one set) to one set and lives in
one of its slots. A new client takes a free slot, or one whose bucket has refilled completely
(it would behave exactly like a new client anyway), or else the least recently seen client of
the set, which is then *evicted*: it comes back with a full bucket. Evictions are counted;
a steady count means ``--rate-limit-max-clients`` is too small for the traffic.

Why striped locks: free-threaded CPython runs thread workers in parallel, and process workers
always run in parallel, so every read-modify-write of a bucket happens under a lock. Sets are
spread over up to :data:`STRIPES` locks (``threading.Lock`` for threads, process-shared
``multiprocessing`` locks for processes), so workers limiting different clients rarely wait
for each other. Nothing relies on the GIL.
"""

from __future__ import annotations

import hashlib
import logging
import math
import mmap
import multiprocessing
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterable
from multiprocessing import shared_memory
from typing import TYPE_CHECKING, Any, Final, Literal

from pounce.config.values import parse_rate_limit

if TYPE_CHECKING:
    from pounce.config import ServerConfig

__all__ = [
    "STRIPES",
    "WAYS",
    "ClientRateLimiter",
    "RateLimitStore",
    "client_key",
    "ipv6_mask",
    "limiter_from_config",
    "store_from_config",
]

logger = logging.getLogger("pounce.error")

#: Slots per set: a new client may displace only one of these, the least recently seen.
WAYS: Final = 8
#: At most this many locks; a set's lock is ``locks[set % stripes]``.
STRIPES: Final = 64
#: How long a worker waits for a stripe lock before letting the request through. Only a
#: process killed while holding one (SIGKILL, the OOM killer) can make it wait that long.
LOCK_TIMEOUT: Final = 0.5

#: IPv4 clients are keyed where their IPv4-mapped IPv6 address would be (``::ffff:a.b.c.d``),
#: so ``1.2.3.4`` and ``::ffff:1.2.3.4`` (a dual-stack socket's view of it) share a bucket.
_V4_MAPPED: Final = 0xFFFF << 32
_MASK64: Final = (1 << 64) - 1
_FIB: Final = 0x9E3779B97F4A7C15  # 2**64 / golden ratio: multiplicative hashing
#: Keys of clients that are not IP addresses sit in ``::8000:0:0:0/65``, inside ``::/64``,
#: which no routable client has (and which an IPv6 client's /64 key would cover whole).
_OPAQUE_TAG: Final = 1 << 63

#: A token, less what floating-point refills lose on the way (0.1 s at 10/s is not quite one).
_ONE: Final = 1.0 - 1e-9
#: A slot's record: its fields' offsets (in 8-byte items), their count and its size.
_LO: Final = 0  # key, low 64 bits (compared first: it differs between most clients)
_HI: Final = 1  # key, high 64 bits
_TOKENS: Final = 2  # the bucket's level at _SEEN (a float)
_SEEN: Final = 3  # the client's last request on the store's clock (a float); 0.0: empty
_FIELDS: Final = 4
_SLOT_BYTES: Final = 8 * _FIELDS

Sharing = Literal["thread", "fork", "spawn"]
#: Where a client's slot is: ``(stripe, its set's first record, key high, key low)``.
Location = tuple[int, int, int, int]


def ipv6_mask(prefix: int) -> int:
    """The 128-bit mask keeping the first *prefix* bits of an IPv6 address."""
    return ((1 << prefix) - 1) << (128 - prefix)


def client_key(host: str, v6_mask: int) -> int:
    """The bucket key of a client address: IPv4 by address, IPv6 by its network prefix.

    Anything that is not an IP address (a custom transport's peer name) is keyed by a
    digest of its text, so it is still limited, apart from every routable address.
    """
    if ":" in host:
        address = host.partition("%")[0]  # a zone index ("fe80::1%eth0") is not the client
        try:
            n = int.from_bytes(socket.inet_pton(socket.AF_INET6, address))
        except OSError:
            return _opaque_key(host)
        if n >> 32 == 0xFFFF:
            return n  # IPv4-mapped: an IPv4 client, keyed by its whole address
        return n & v6_mask
    try:
        return _V4_MAPPED | int.from_bytes(socket.inet_pton(socket.AF_INET, host))
    except OSError:
        return _opaque_key(host)


def _opaque_key(host: str) -> int:
    digest = hashlib.blake2b(host.encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return _OPAQUE_TAG | (int.from_bytes(digest) >> 1)


class RateLimitStore:
    """The server's bucket table: created once before the workers start, shared by all.

    *sharing* says who shares it: ``"thread"`` (workers are threads of this process),
    ``"fork"`` (process workers forked after it was created: they inherit the mapping and
    the locks) or ``"spawn"`` (process workers started fresh: the store is pickled to them
    and they attach to the shared-memory block by name).
    """

    def __init__(
        self,
        count: int,
        period: float,
        *,
        burst: int | None = None,
        max_clients: int = 65536,
        sharing: Sharing = "thread",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        #: The configured limit: *count* requests per *period* seconds.
        self.count = count
        self.period = period
        #: Tokens a second.
        self.rate = count / period
        #: Bucket size: requests a client may send at once; defaults to the limit's count.
        self.burst = burst if burst is not None else count
        sets = max(1, math.ceil(max_clients / WAYS))
        self.sets = sets
        #: Clients the table holds (``max_clients`` rounded up to whole sets).
        self.capacity = sets * WAYS
        self.stripes = min(STRIPES, sets)
        self.sharing: Sharing = sharing
        self._clock = clock
        self._secret = secrets.randbits(64)
        # Counters padded to whole cache lines, so records start on a line boundary.
        self._counter_bytes = -(-3 * 8 * self.stripes // 64) * 64
        self._size = self._counter_bytes + _SLOT_BYTES * self.capacity
        self._owner = True
        self._shm: Any = None
        self._mmap: Any = None
        self._locks: list[Any]
        if sharing == "thread":
            self._locks = [threading.Lock() for _ in range(self.stripes)]
        else:
            context = multiprocessing.get_context(sharing)
            self._locks = [context.Lock() for _ in range(self.stripes)]
        if sharing == "spawn":
            self._shm = shared_memory.SharedMemory(create=True, size=self._size)
            self._mmap = _own_mapping(self._shm, self._size)
            self._map(self._mmap)
        else:
            # Anonymous and MAP_SHARED: forked children see the same pages.
            self._mmap = mmap.mmap(-1, self._size)
            self._map(self._mmap)
        #: Stripes whose lock could not be taken in time (a worker died holding it); this
        #: process lets their clients through rather than stall. Per process, never shared.
        self._broken: set[int] = set()

    def _map(self, buffer: Any) -> None:
        """Lay the table out over *buffer*: per-stripe counters, then one record per slot.

        A record is four 8-byte fields side by side (:data:`_LO`, :data:`_HI`,
        :data:`_TOKENS`, :data:`_SEEN`), two records to a 64-byte cache line and a set's
        eight records in four lines, aligned: a client found in its set's first slot costs
        one line of memory traffic, not one line per field.
        """
        view = memoryview(buffer)
        s = self.stripes
        self._view = view
        self._evicted: memoryview[int] = view[0 : 8 * s].cast("Q")
        self._refused: memoryview[int] = view[8 * s : 16 * s].cast("Q")
        self._used: memoryview[int] = view[16 * s : 24 * s].cast("Q")
        records = view[self._counter_bytes : self._size]
        #: The same records seen as integers (the key fields) and as floats (the bucket).
        self._ints: memoryview[int] = records.cast("Q")
        self._floats: memoryview[float] = records.cast("d")

    # -- the request path -----------------------------------------------------------------

    def locate(self, key: int) -> Location:
        """Where *key*'s bucket lives; depends only on the key, so callers may cache it."""
        folded = (key ^ (key >> 64) ^ self._secret) & _MASK64
        index = (((folded * _FIB) & _MASK64) * self.sets) >> 64
        first = index * WAYS * _FIELDS
        return index % self.stripes, first, (key >> 64) & _MASK64, key & _MASK64

    def acquire(self, where: Location) -> float:
        """Take a token from the bucket at *where*: 0.0 if admitted, else seconds to wait."""
        stripe, first, hi, lo = where
        lock = self._locks[stripe]
        if not lock.acquire(True, LOCK_TIMEOUT):
            self._lock_lost(stripe)
            return 0.0
        try:
            now = self._clock()  # read under the lock: a bucket's clock never runs backwards
            ints = self._ints
            for record in range(first, first + WAYS * _FIELDS, _FIELDS):
                if ints[record] == lo and ints[record + _HI] == hi:
                    floats = self._floats
                    last = floats[record + _SEEN]
                    if not last:
                        break  # an empty slot (only the unspecified address "::" keys as 0)
                    rate = self.rate
                    level = floats[record + _TOKENS] + (now - last) * rate
                    floats[record + _SEEN] = now
                    if level >= _ONE:
                        burst = self.burst
                        floats[record + _TOKENS] = (level if level < burst else burst) - 1.0
                        return 0.0
                    floats[record + _TOKENS] = level
                    self._refused[stripe] += 1
                    return (1.0 - level) / rate
            self._insert(stripe, first, hi, lo, now)
            return 0.0
        finally:
            lock.release()

    def _insert(self, stripe: int, first: int, hi: int, lo: int, now: float) -> None:
        """A client not in the table: give it a slot, with a full bucket less this request."""
        floats, rate, burst = self._floats, self.rate, self.burst
        victim = first
        oldest = math.inf
        evict = True
        for record in range(first, first + WAYS * _FIELDS, _FIELDS):
            last = floats[record + _SEEN]
            if last == 0.0:
                self._used[stripe] += 1
                victim, evict = record, False
                break
            if floats[record + _TOKENS] + (now - last) * rate >= burst:
                victim, evict = record, False  # refilled: forgetting it changes nothing
                break
            if last < oldest:
                oldest, victim = last, record
        if evict:
            self._evicted[stripe] += 1
        ints = self._ints
        ints[victim] = lo
        ints[victim + _HI] = hi
        floats[victim + _TOKENS] = burst - 1.0
        floats[victim + _SEEN] = now

    def _lock_lost(self, stripe: int) -> None:
        if stripe not in self._broken:
            self._broken.add(stripe)
            # In this process only: the next requests of this stripe pass without waiting.
            self._locks[stripe] = _ABANDONED
            logger.error(
                "Rate limiter: lock %d of %d was not released (a worker process was killed "
                "holding it); clients hashed to it are no longer limited until the server "
                "restarts",
                stripe,
                self.stripes,
            )

    # -- statistics (any thread) ------------------------------------------------------------

    def _total(self, counters: memoryview) -> int:
        total = 0
        for stripe, lock in enumerate(self._locks):
            if lock.acquire(True, LOCK_TIMEOUT):
                try:
                    total += counters[stripe]
                finally:
                    lock.release()
        return total

    @property
    def evictions(self) -> int:
        """Clients forgotten, bucket not yet refilled, to make room for new ones (all workers)."""
        return self._total(self._evicted)

    @property
    def refused(self) -> int:
        """Requests refused with 429 by every worker since the server started."""
        return self._total(self._refused)

    @property
    def clients(self) -> int:
        """Slots in use: clients seen recently enough to still be remembered."""
        return self._total(self._used)

    def stats(self) -> dict[str, Any]:
        return {
            "limit": f"{self.count}/{_UNITS.get(self.period, f'{self.period:g}s')}",
            "burst": self.burst,
            "capacity": self.capacity,
            "clients": self.clients,
            "refused": self.refused,
            "evictions": self.evictions,
        }

    # -- lifetime -----------------------------------------------------------------------------

    def unlink(self) -> None:
        """Remove the shared-memory block's name (spawn only; in the process that made it).

        Called by the supervisor once its workers are gone. The mapping itself stays valid
        until the store is garbage-collected, so statistics can still be read; anonymous
        ``mmap`` tables (threads, fork) have no name and vanish with their last user.
        """
        if self._shm is not None and self._owner:
            self._owner = False
            self._shm.unlink()

    def __getstate__(self) -> dict[str, Any]:
        if self.sharing != "spawn":
            raise TypeError(
                f"a rate-limit store shared by {self.sharing} workers cannot be pickled; "
                "create it with sharing='spawn' for spawned worker processes"
            )
        state = {
            name: value
            for name, value in self.__dict__.items()
            if not isinstance(value, memoryview) and name not in ("_shm", "_mmap", "_broken")
        }
        state["_shm_name"] = self._shm.name
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        name = state.pop("_shm_name")
        self.__dict__.update(state)
        self._owner = False
        self._mmap = None
        self._broken = set()
        # Attached by a spawned worker; the process that created it removes it.
        self._shm = shared_memory.SharedMemory(name=name)
        self._mmap = _own_mapping(self._shm, self._size)
        self._map(self._mmap)


class _AbandonedLock:
    """Stands in for a stripe lock a dead process left held: never acquired, never waited on."""

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        return False

    def release(self) -> None:
        raise RuntimeError("an abandoned rate-limit lock is never held")


_ABANDONED: Final = _AbandonedLock()


def _own_mapping(shm: shared_memory.SharedMemory, size: int) -> Any:
    """A mapping of *shm*'s block that the store owns, then *shm*'s own one closed.

    ``SharedMemory`` closes its mapping when garbage-collected, which fails (and warns)
    while the store's array views still point into it; a mapping of our own lives exactly
    as long as those views. The block itself stays until :meth:`RateLimitStore.unlink`.
    """
    fd = getattr(shm, "_fd", -1)
    if fd < 0:  # Windows: no descriptor to map again; the block lives while shm is open
        return shm.buf
    own = mmap.mmap(fd, size)
    shm.close()
    return own


_UNITS: Final = {1.0: "s", 60.0: "m", 3600.0: "h"}


class ClientRateLimiter:
    """One worker's view of the store: which requests count, and for which client.

    Used from the worker's event-loop thread only, so its address cache needs no lock.
    """

    __slots__ = ("_cache", "_exact", "_mask", "_prefixes", "store")

    #: Addresses whose bucket location is remembered (about 160 bytes each, so 2.6 MB at
    #: most per worker); beyond it the cache starts over, so an attacker rotating addresses
    #: costs a little time (about 1.7 us a request to parse and hash), never memory.
    CACHE_SIZE: Final = 16384

    def __init__(
        self,
        store: RateLimitStore,
        *,
        ipv6_prefix: int = 64,
        exempt_paths: Iterable[str] = (),
        exempt_prefixes: Iterable[str] = (),
    ) -> None:
        self.store = store
        self._mask = ipv6_mask(ipv6_prefix)
        self._exact = frozenset(exempt_paths)
        self._prefixes = tuple(exempt_prefixes)
        self._cache: dict[str, Location] = {}

    def check(self, path: str, client: tuple[str, int] | None) -> float:
        """0.0 to let the request through, else the seconds until this client may retry."""
        if path in self._exact or (self._prefixes and path.startswith(self._prefixes)):
            return 0.0
        if client is None:
            return 0.0  # a Unix-socket peer without proxy headers: nobody to tell apart
        host = client[0]
        cache = self._cache
        where = cache.get(host)
        if where is None:
            if len(cache) >= self.CACHE_SIZE:
                cache.clear()
            where = cache[host] = self.store.locate(client_key(host, self._mask))
        return self.store.acquire(where)


def store_from_config(config: ServerConfig, sharing: Sharing) -> RateLimitStore | None:
    """The server's store for ``--rate-limit`` (None when it is off)."""
    if config.rate_limit is None:
        return None
    count, period = parse_rate_limit(config.rate_limit)
    return RateLimitStore(
        count,
        period,
        burst=config.rate_limit_burst,
        max_clients=config.rate_limit_max_clients,
        sharing=sharing,
    )


def limiter_from_config(config: ServerConfig, store: RateLimitStore) -> ClientRateLimiter:
    """One worker's limiter over the server's *store*, with the paths never limited.

    Probes and the metrics endpoint are exempt by exact path (a monitor polling them must
    never be told to back off); ``--rate-limit-exempt`` entries are plain string prefixes.
    Both are compared with ``scope["path"]``, which carries ``--root-path`` in front.
    """
    root = config.root_path
    # The metrics endpoint only when the main port serves it (an app may have its own
    # /metrics, and with --metrics-bind the path on the main port is the app's).
    served = config.metrics and config.metrics_bind is None
    metrics = config.metrics_path if served else None
    exact = [
        root + path for path in (config.health_path, config.ready_path, metrics) if path is not None
    ]
    return ClientRateLimiter(
        store,
        ipv6_prefix=config.rate_limit_ipv6_prefix,
        exempt_paths=exact,
        exempt_prefixes=[root + prefix for prefix in config.rate_limit_exempt],
    )

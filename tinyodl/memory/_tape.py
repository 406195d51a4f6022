"""A tiny allocation simulator: live bytes over time, with reference counts.

The analytic memory model (:mod:`tinyodl.memory.analytic`) replays a training step as a
sequence of allocations and releases, the way CPython frees a numpy array when its last
reference goes away. :class:`Tape` tracks the live bytes, the peak, the phase in which the
peak happened and what was alive at that moment, by kind ("activation", "scratch", ...).
"""

from __future__ import annotations

from dataclasses import dataclass

#: numpy reuses a temporary operand of ``a * b + c`` as the output (no new allocation) when
#: it is at least this large (``NPY_MIN_ELIDE_BYTES``, numpy/_core/src/multiarray/temp_elide.c).
ELIDE_BYTES = 256 * 1024


@dataclass(eq=False)
class Buf:
    """One simulated memory block.

    ``resident`` blocks existed before the step (the input batch); they are never counted.
    """

    nbytes: int
    kind: str
    refs: int = 1
    resident: bool = False


class Tape:
    """Live bytes of a simulated step, above the memory resident when it started."""

    def __init__(self) -> None:
        self.live = 0
        self.peak = 0
        self.phase = "forward"
        self.peak_phase = "forward"
        self.phase_peaks: dict[str, int] = {}
        self._by_kind: dict[str, int] = {}
        self.at_peak: dict[str, int] = {}
        self.local_peak = 0

    def start_local(self) -> int:
        """Start tracking the peak of one call; returns the live bytes before it."""
        self.local_peak = self.live
        return self.live

    def set_phase(self, name: str) -> None:
        self.phase = name
        self.phase_peaks.setdefault(name, self.live)

    def _change(self, buf: Buf, sign: int) -> None:
        if buf.resident:
            return
        self.live += sign * buf.nbytes
        self._by_kind[buf.kind] = self._by_kind.get(buf.kind, 0) + sign * buf.nbytes
        self.local_peak = max(self.local_peak, self.live)
        if self.live > self.phase_peaks.get(self.phase, -1):
            self.phase_peaks[self.phase] = self.live
        if self.live > self.peak:
            self.peak, self.peak_phase = self.live, self.phase
            self.at_peak = {k: v for k, v in self._by_kind.items() if v}

    def new(self, nbytes: int, kind: str = "scratch") -> Buf:
        """Allocate a block held by one reference."""
        buf = Buf(int(nbytes), kind)
        self._change(buf, +1)
        return buf

    def resident(self, nbytes: int, kind: str = "input") -> Buf:
        """A block that already existed (counted in the resident memory, not here)."""
        return Buf(int(nbytes), kind, resident=True)

    def ref(self, buf: Buf) -> Buf:
        """One more reference to ``buf`` (a view, a saved tensor)."""
        buf.refs += 1
        return buf

    def drop(self, *bufs: Buf | None) -> None:
        """Release one reference to each buffer; free those that reach zero."""
        for buf in bufs:
            if buf is None:
                continue
            buf.refs -= 1
            if buf.refs < 0:
                raise AssertionError("Tape.drop: buffer released more often than referenced")
            if buf.refs == 0:
                self._change(buf, -1)

    def spike(self, *nbytes: int) -> None:
        """Temporaries that live together for a moment and are then all freed."""
        bufs = [self.new(n) for n in nbytes]
        self.drop(*bufs)

    def chain(self, nbytes: int, ops: int, kind: str = "scratch") -> Buf:
        """Result of ``ops`` element-wise binary operations starting from named arrays.

        The first operation allocates; each later one reuses its temporary operand when it
        is at least :data:`ELIDE_BYTES` (numpy's temporary elision), otherwise allocates a
        new array and frees the old temporary.
        """
        out = self.new(nbytes, kind)
        for _ in range(ops - 1):
            if nbytes < ELIDE_BYTES:
                nxt = self.new(nbytes, kind)
                self.drop(out)
                out = nxt
        return out

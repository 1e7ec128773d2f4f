"""SAM FLAG bits (SAM spec §1.4) and the read filters samtools and mosdepth apply by default."""

from __future__ import annotations

PAIRED = 0x1
PROPER_PAIR = 0x2
UNMAP = 0x4
MUNMAP = 0x8
REVERSE = 0x10
MREVERSE = 0x20
READ1 = 0x40
READ2 = 0x80
SECONDARY = 0x100
QCFAIL = 0x200
DUP = 0x400
SUPPLEMENTARY = 0x800

#: UNMAP | SECONDARY | QCFAIL | DUP (1796): the default of ``mosdepth -F``,
#: ``samtools depth`` and ``samtools mpileup --ff``.
DEFAULT_EXCLUDE = UNMAP | SECONDARY | QCFAIL | DUP


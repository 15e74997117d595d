"""arm64 kernel virtual addresses to physical ones, from VMCOREINFO alone.

Kernel image (text/data/bss): PA = VA - ``kimage_voffset``.  Linear map (kmalloc and memblock
memory): PA = VA - PAGE_OFFSET + ``PHYS_OFFSET``, PAGE_OFFSET = -(1 << VA_BITS) (Linux 5.4+ layout:
the linear map is the lower half of the kernel VA space, the image lives in the upper half;
Documentation/arch/arm64/memory.rst).  Before 5.4 (commit 14c127c957c1 "arm64: mm: Flip kernel VA
space") the halves were the other way round: PAGE_OFFSET = -(1 << (VA_BITS - 1)), the image in the
lower half.  Which one a dump uses shows in where its image symbols (``SYMBOL(_stext)``,
``SYMBOL(swapper_pg_dir)``) lie.  Other addresses (vmalloc) are translated by :meth:`KernelVA.walk`,
a walk of ``swapper_pg_dir`` with the kernel half's input size (``64 - TCR_EL1_T1SZ``) and the
dump's page size as granule (checked against the formulas on the real captures).  52-bit VA
kernels are refused (their linear map differs).

>>> k = KernelVA.from_vmcoreinfo({"NUMBER(VA_BITS)": "48", "NUMBER(kimage_voffset)": "0xffffc89262000000",
...                              "NUMBER(PHYS_OFFSET)": "0x40000000"})
>>> hex(k.pa(0xffffc892a3ee8750)), hex(k.pa(0xffff00000a000000))
('0x41ee8750', '0x4a000000')
>>> old = KernelVA.from_vmcoreinfo({"NUMBER(VA_BITS)": "48", "NUMBER(kimage_voffset)": "0xfffeffffc8000000",
...                                "NUMBER(PHYS_OFFSET)": "0x40000000", "SYMBOL(_stext)": "ffff000008081000"})
>>> old.flipped, hex(old.pa(0xffff80000a000000)), hex(old.pa(0xffff000008081000))
(False, '0x4a000000', '0x40081000')
"""

from __future__ import annotations

from dataclasses import dataclass

from smmu_forensics.dumps.base import PhysicalMemory

__all__ = ["KernelVA", "TranslationError"]

MASK64 = (1 << 64) - 1


class TranslationError(ValueError):
    """A kernel VA this translator cannot map (not linear map nor kernel image, or no VMCOREINFO)."""


def _num(info: dict[str, str], key: str, base: int = 0) -> int:
    v = info.get(key)
    if v is None:
        raise TranslationError(f"VMCOREINFO lacks {key}")
    try:
        return int(v, base)
    except ValueError:
        raise TranslationError(f"VMCOREINFO {key}={v!r} is not a number") from None


@dataclass(frozen=True)
class KernelVA:
    va_bits: int
    kimage_voffset: int
    phys_offset: int
    flipped: bool = True  # the 5.4+ layout (linear map in the lower half)
    swapper: int | None = None  # SYMBOL(swapper_pg_dir), for :meth:`walk`
    t1sz: int | None = None  # NUMBER(TCR_EL1_T1SZ): the kernel half's input size is 64 - T1SZ
    page_shift: int = 12

    @classmethod
    def from_vmcoreinfo(cls, info: dict[str, str]) -> KernelVA:
        va_bits = _num(info, "NUMBER(VA_BITS)", 10)
        if va_bits not in (39, 42, 47, 48):
            raise TranslationError(f"VA_BITS={va_bits}: only 39..48-bit kernels are translated without a page-table walk")
        image = next((info[k] for k in ("SYMBOL(_stext)", "SYMBOL(swapper_pg_dir)") if k in info), None)
        flipped = True
        if image is not None:
            try:
                flipped = int(image, 16) >= (-(1 << (va_bits - 1))) & MASK64
            except ValueError:
                raise TranslationError(f"VMCOREINFO image symbol {image!r} is not a number") from None
        swapper = int(info["SYMBOL(swapper_pg_dir)"], 16) if "SYMBOL(swapper_pg_dir)" in info else None
        t1sz = _num(info, "NUMBER(TCR_EL1_T1SZ)", 16) if "NUMBER(TCR_EL1_T1SZ)" in info else None
        if t1sz is not None and not 12 <= t1sz <= 39:  # a kernel half of 25..52 bits, or the value is not to be trusted
            t1sz = None
        page = _num(info, "PAGESIZE", 10) if "PAGESIZE" in info else 4096
        return cls(va_bits, _num(info, "NUMBER(kimage_voffset)", 16), _num(info, "NUMBER(PHYS_OFFSET)", 16), flipped,
                   swapper, t1sz, page.bit_length() - 1 if page in (4096, 16384, 65536) else 12)

    @property
    def page_offset(self) -> int:
        return (-(1 << (self.va_bits if self.flipped else self.va_bits - 1))) & MASK64

    @property
    def linear_end(self) -> int:
        """The end of the linear map (exclusive; 2^64 in the pre-5.4 layout)."""
        return self.page_offset + (1 << (self.va_bits - 1))

    def pa(self, va: int) -> int:
        """The physical address of a linear-map or kernel-image VA."""
        va &= MASK64
        if self.page_offset <= va < self.linear_end:
            return va - self.page_offset + self.phys_offset
        image = va >= self.linear_end if self.flipped else (-(1 << self.va_bits)) & MASK64 <= va < self.page_offset
        if image:
            pa = (va - self.kimage_voffset) & MASK64
            if pa < 1 << 52:
                return pa
        raise TranslationError(f"{va:#x} is neither a linear-map nor a kernel-image address")

    def resolve(self, mem: PhysicalMemory, va: int) -> int:
        """:meth:`pa` when the address is linear-map or image, else :meth:`walk` (vmalloc)."""
        try:
            return self.pa(va)
        except TranslationError:
            return self.walk(mem, va)

    def walk(self, mem: PhysicalMemory, va: int) -> int:
        """The physical address of any kernel VA (vmalloc too), by a walk of ``swapper_pg_dir`` as
        the MMU does it for TTBR1 (crash's ``vtop``)."""
        from smmu_forensics.smmu.pgtable import translate

        if self.swapper is None:
            raise TranslationError("VMCOREINFO lacks SYMBOL(swapper_pg_dir): no page-table walk")
        t = translate(mem, self.pa(self.swapper), va, 64 - (self.t1sz or 64 - self.va_bits), self.page_shift)
        if t.pa is None:
            raise TranslationError(f"{va:#x}: {t.why}")
        return t.pa

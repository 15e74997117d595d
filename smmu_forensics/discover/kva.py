"""arm64 kernel virtual addresses to physical ones, from VMCOREINFO alone.

Kernel image (text/data/bss): PA = VA - ``kimage_voffset``.  Linear map (kmalloc and memblock
memory): PA = VA - PAGE_OFFSET + ``PHYS_OFFSET``, PAGE_OFFSET = -(1 << VA_BITS) (Linux 5.4+ layout:
the linear map is the lower half of the kernel VA space, the image lives in the upper half;
Documentation/arch/arm64/memory.rst).  Other addresses (vmalloc, ioremap) need a walk of
``swapper_pg_dir`` and are refused here, as are 52-bit VA kernels (their layout differs).

>>> k = KernelVA.from_vmcoreinfo({"NUMBER(VA_BITS)": "48", "NUMBER(kimage_voffset)": "0xffffc89262000000",
...                              "NUMBER(PHYS_OFFSET)": "0x40000000"})
>>> hex(k.pa(0xffffc892a3ee8750)), hex(k.pa(0xffff00000a000000))
('0x41ee8750', '0x4a000000')
"""

from __future__ import annotations

from dataclasses import dataclass

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

    @classmethod
    def from_vmcoreinfo(cls, info: dict[str, str]) -> KernelVA:
        va_bits = _num(info, "NUMBER(VA_BITS)", 10)
        if va_bits not in (39, 42, 47, 48):
            raise TranslationError(f"VA_BITS={va_bits}: only 39..48-bit kernels are translated without a page-table walk")
        return cls(va_bits, _num(info, "NUMBER(kimage_voffset)", 16), _num(info, "NUMBER(PHYS_OFFSET)", 16))

    @property
    def page_offset(self) -> int:
        return (-(1 << self.va_bits)) & MASK64

    @property
    def linear_end(self) -> int:
        return (self.page_offset + (1 << (self.va_bits - 1))) & MASK64

    def pa(self, va: int) -> int:
        """The physical address of a linear-map or kernel-image VA."""
        va &= MASK64
        if self.page_offset <= va < self.linear_end:
            return va - self.page_offset + self.phys_offset
        if va >= self.linear_end:
            pa = (va - self.kimage_voffset) & MASK64
            if pa < 1 << 52:
                return pa
        raise TranslationError(f"{va:#x} is neither a linear-map nor a kernel-image address")

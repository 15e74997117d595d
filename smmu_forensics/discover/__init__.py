"""What the crashed kernel left in memory: VMCOREINFO-driven address translation, the kernel log.

Reads a :class:`~smmu_forensics.dumps.base.PhysicalMemory` with no debuginfo, only the VMCOREINFO
every kdump and QEMU dump carries.  Layered between ``dumps/`` (below) and ``smmu/`` (above).
"""

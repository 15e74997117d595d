"""smmu-forensics: ARM SMMUv3 stream tables in Linux crash dumps.

Layers, each knowing only the one below it::

    dumps/  (one layer per dump format)  -> PhysicalMemory
    smmu/   (bit layouts, schemas, fast decoders, table walk)
    rules/  (the kdump adopt rules of each kernel version, findings)
    report/ (one model, one renderer per output format)
    cli.py  (click commands wiring the above)
"""

__version__ = "0.1.0"

from smmu_forensics.cli import main

main()

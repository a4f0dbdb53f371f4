"""Git re-basin for SD1, SD2 and SDXL: align B's hidden units with A's before a merge, using only
permutations that leave what the network computes unchanged (docs/REBASIN.md)."""
